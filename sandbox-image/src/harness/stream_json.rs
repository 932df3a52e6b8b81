//! Harnesses that speak "stream-json": one JSON message per line each way, the format Claude
//! Code introduced and Amp follows. The CLI stays up across turns: each user message written to
//! its stdin starts a turn, which ends with a `result` message.
//!
//! Out: `system` (init, with the session id), `assistant` (text, thinking and tool-use blocks),
//! `user` (tool results), `stream_event` (partial text), `result`, and `control_request`
//! (`can_use_tool`: Claude Code's permission prompt, which becomes a Centaur approval).
//! In: `user` messages, `control_response`, and `control_request` (`interrupt`).
//!
//! A message that arrives while a turn runs (steering) is written to the CLI's stdin as a user
//! message. The CLI queues it: Claude Code shows it to the model with its next request (as a
//! note beside the tool results); if the model was already writing its final answer, no request
//! follows, and the CLI answers the queued message after that turn's `result`, with a `result`
//! of its own. So a message counts as delivered only once the CLI shows a model response that
//! began after it was written (a `message_start`, or an `assistant` message with another id than
//! the latest response's, or with none, as Amp's), or once a `result` that answers it came;
//! and a `result` while a written message was not yet shown to a model does not end the turn:
//! the turn goes on to the next `result` (the answer to the queued message), and its result
//! text is both answers, in order, since the person's input was both messages. (A message
//! written while a request was on its way, before the response began, is taken as shown to
//! it.) An interrupt ends the turn at the next `result` all the same; a message still queued
//! then is not reported, and the CLI is stopped, so that its answer to it cannot come out as
//! the next turn's.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;

use centaur_protocol::runner::Finish;
use centaur_protocol::{ApprovalKind, EventBody};
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::truncate;
use crate::turn::{Sandbox, Turn};

/// How long an interrupted turn may take to wind down before the process is killed.
const INTERRUPT_GRACE: Duration = Duration::from_secs(10);
/// How long a CLI being stopped may take to exit on its own once its stdin is closed.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How often a CLI being stopped has what it started noted.
const STOP_POLL: Duration = Duration::from_millis(50);

/// How to start one CLI.
pub struct Launch {
    pub name: &'static str,
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Where the session id is kept, to resume the conversation in a new sandbox.
    pub session_file: PathBuf,
    /// The arguments that resume a session (given its id), put before `args`.
    pub resume: Option<fn(&str) -> Vec<String>>,
    /// Whether the CLI asks before it runs a command (`can_use_tool`): its commands are then
    /// started only once approved, and a denied one never is.
    pub asks_first: bool,
}

pub struct Session {
    sandbox: Sandbox,
    process: Option<Process>,
    pub broken: bool,
}

struct Process {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Its registration with the runner's process registry, for as long as the child lives.
    _owned: crate::tree::Owned,
}

pub enum Broke {
    Process(String),
}

/// An approval on its way: the answer to send, and the tool use it decided (if the request
/// named one) with whether it may run.
type Pending<'a> = Pin<Box<dyn Future<Output = (Value, Option<String>, bool)> + Send + 'a>>;

impl Session {
    pub fn new(sandbox: &Sandbox) -> Session {
        Session {
            sandbox: sandbox.clone(),
            process: None,
            broken: false,
        }
    }

    fn start(&mut self, launch: &Launch) -> Result<(), Broke> {
        let mut command = tokio::process::Command::new(&launch.program);
        // The id comes from the writable workspace: only a plain id reaches the command line.
        if let (Some(resume), Ok(session)) =
            (launch.resume, std::fs::read_to_string(&launch.session_file))
            && is_session_id(session.trim())
        {
            command.args(resume(session.trim()));
        }
        command.args(&launch.args);
        let mut child = command
            .current_dir(&self.sandbox.workspace)
            .envs(&self.sandbox.env)
            .envs(launch.env.iter().cloned())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Broke::Process(format!("cannot start `{}`: {e}", launch.program)))?;
        // It serves every turn: ending a turn early spares it and ends what it started.
        let owned = crate::tree::own(child.id(), crate::tree::Lifetime::Sandbox);
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
        self.process = Some(Process {
            child,
            stdin,
            stdout,
            _owned: owned,
        });
        Ok(())
    }

    /// Ends the CLI, if one runs: the next turn starts it again (resuming the session), with
    /// what the launch says then. Its stdin is closed and it gets up to [`STOP_GRACE`] to exit
    /// on its own (having written its session); then it ends with everything it started (MCP
    /// servers and the like), which would otherwise outlive it.
    pub async fn stop(&mut self) {
        let Some(process) = self.process.take() else {
            return;
        };
        // Registered until it is waited for: the reaper leaves it to `child`.
        let Process {
            mut child,
            stdin,
            mut stdout,
            _owned,
        } = process;
        let mut tree = child.id().and_then(crate::tree::Subtree::of);
        drop(stdin);
        let give_up = tokio::time::Instant::now() + STOP_GRACE;
        let mut reading = true;
        loop {
            if let Some(tree) = &mut tree {
                tree.note();
            }
            tokio::select! {
                _ = child.wait() => break,
                // Read what it still says, so that it never blocks on a full pipe.
                line = stdout.next_line(), if reading => {
                    reading = matches!(line, Ok(Some(_)));
                }
                _ = tokio::time::sleep(STOP_POLL) => {}
                _ = tokio::time::sleep_until(give_up) => break,
            }
        }
        if let Some(tree) = &tree {
            tree.end().await;
        }
        let _ = child.kill().await;
    }

    /// Starts the CLI if it is not running (see [`super::Harness::prepare`]); a failure is left
    /// for the turn, which tries again and reports it.
    pub fn prepare(&mut self, launch: &Launch) {
        if self.process.is_none() && !self.broken {
            let _ = self.start(launch);
        }
    }

    /// Runs one turn; a broken process ends it with `execution.failed` and marks the harness
    /// broken (its sandbox is then replaced).
    pub async fn turn(&mut self, launch: &Launch, turn: &mut Turn) -> Finish {
        match self.run_turn(launch, turn).await {
            Ok((finish, Queued::Nothing)) => finish,
            Ok((finish, Queued::Steering)) => {
                // It would answer the queued message after the turn: the next turn resumes the
                // session in a fresh CLI instead.
                self.stop().await;
                finish
            }
            Err(Broke::Process(error)) => {
                self.broken = true;
                if let Some(mut process) = self.process.take() {
                    let _ = process.child.kill().await;
                }
                Finish::Failed {
                    error: format!("{error}; the sandbox will be replaced"),
                    output: None,
                }
            }
        }
    }

    async fn run_turn(
        &mut self,
        launch: &Launch,
        turn: &mut Turn,
    ) -> Result<(Finish, Queued), Broke> {
        if self.process.is_none() {
            self.start(launch)?;
        }
        let name = launch.name;
        let process = self.process.as_mut().expect("started");
        process.send(&user_message(&turn.prompt())).await?;
        let mut steering = turn.steering.take_messages();
        let turn = &*turn;
        let mut state = TurnState {
            asks_first: launch.asks_first,
            ..TurnState::default()
        };
        let mut approvals: FuturesUnordered<Pending<'_>> = FuturesUnordered::new();
        let mut interrupted_at: Option<tokio::time::Instant> = None;
        let mut steered = Steered::default();
        loop {
            let deadline = interrupted_at.map(|at| at + INTERRUPT_GRACE);
            tokio::select! {
                line = process.stdout.next_line() => {
                    let line = line
                        .map_err(|e| Broke::Process(format!("reading from {name} failed: {e}")))?
                        .ok_or_else(|| Broke::Process(format!("{name} exited in the middle of a turn")))?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    tracing::trace!(target: "centaur_runner::stream_json", %line, "from {name}");
                    let message: Value = serde_json::from_str(&line).map_err(|_| {
                        Broke::Process(format!("{name} printed something that is not stream-json: {}", truncate(&line, 200)))
                    })?;
                    if let Some(session) = message["session_id"].as_str()
                        && state.session.as_deref() != Some(session)
                    {
                        state.session = Some(session.to_owned());
                        if let Some(dir) = launch.session_file.parent() {
                            let _ = std::fs::create_dir_all(dir);
                        }
                        let _ = std::fs::write(&launch.session_file, session);
                    }
                    if message["type"] == "control_request" && message["request"]["subtype"] == "can_use_tool" {
                        let request_id = message["request_id"].clone();
                        let request = message["request"].clone();
                        approvals.push(Box::pin(async move {
                            let input = request["input"].clone();
                            let (kind, summary) = describe_tool(&request);
                            let verdict = turn.approval(kind, summary, json!({"tool": request["tool_name"], "input": input})).await;
                            let approved = crate::turn::approved(verdict);
                            let response = if approved {
                                json!({"behavior": "allow", "updatedInput": input})
                            } else {
                                json!({"behavior": "deny", "message": "a person on this thread denied it"})
                            };
                            let answer = json!({"type": "control_response", "response": {"subtype": "success", "request_id": request_id, "response": response}});
                            (answer, request["tool_use_id"].as_str().map(str::to_owned), approved)
                        }));
                        continue;
                    }
                    if let Some(response) = model_response(&message) {
                        steered.response(turn, response);
                    }
                    if let Some(finish) = state.message(turn, &message) {
                        if interrupted_at.is_some() {
                            let queued = if steered.unseen.is_empty() { Queued::Nothing } else { Queued::Steering };
                            return Ok((Finish::Cancelled { reason: "interrupted".into() }, queued));
                        }
                        if let Some(finish) = steered.result(turn, finish) {
                            return Ok((finish, Queued::Nothing));
                        }
                    }
                }
                Some((answer, tool_use, approved)) = approvals.next(), if !approvals.is_empty() => {
                    // Started before the CLI hears it may go ahead: its output cannot come first.
                    if let Some(id) = tool_use {
                        state.decided(turn, &id, approved);
                    }
                    process.send(&answer).await?;
                }
                Some(steer) = steering.recv() => {
                    // Queued by the CLI: reported once a model response shows it (see the module).
                    process.send(&user_message(&steer.text)).await?;
                    steered.written(steer.message_id);
                }
                _ = turn.cancelled.cancelled(), if interrupted_at.is_none() => {
                    interrupted_at = Some(tokio::time::Instant::now());
                    let id = uuid::Uuid::now_v7().to_string();
                    process.send(&json!({"type": "control_request", "request_id": id, "request": {"subtype": "interrupt"}})).await?;
                }
                _ = async { tokio::time::sleep_until(deadline.expect("set")).await }, if deadline.is_some() => {
                    return Err(Broke::Process(format!("{name} did not stop after an interrupt")));
                }
            }
        }
    }
}

impl Process {
    async fn send(&mut self, message: &Value) -> Result<(), Broke> {
        let mut line = serde_json::to_vec(message).expect("serializable");
        line.push(b'\n');
        self.stdin
            .write_all(&line)
            .await
            .map_err(|e| Broke::Process(format!("writing to the harness failed: {e}")))
    }
}

/// Whether the CLI still holds a queued message when a turn ends.
enum Queued {
    Nothing,
    Steering,
}

/// The steering written to the CLI in this turn, until a model response or a `result` shows
/// the CLI took it (see the module doc).
#[derive(Default)]
struct Steered {
    /// The id of the latest model response seen (`None` if the CLI gave none).
    latest_response: Option<String>,
    /// Written and not yet shown to a model: the id, and whether a `result` came since.
    unseen: Vec<(uuid::Uuid, bool)>,
    /// The answers of the turn's earlier results (each followed by queued steering).
    answers: Vec<String>,
}

impl Steered {
    fn written(&mut self, message_id: uuid::Uuid) {
        self.unseen.push((message_id, false));
    }

    /// A model response is under way: one that began after a message was written had it with
    /// its request.
    fn response(&mut self, turn: &Turn, response: Response<'_>) {
        let id = match response {
            Response::Started(id) => id,
            Response::Message(id) if id.is_some() && id == self.latest_response.as_deref() => {
                return;
            }
            Response::Message(id) => id,
        };
        self.latest_response = id.map(str::to_owned);
        for (message_id, _) in self.unseen.drain(..) {
            turn.steering.delivered(message_id);
        }
    }

    /// A `result` came: the turn's end, unless a message written before it was not yet shown
    /// to a model (the CLI answers it next, with another `result`).
    fn result(&mut self, turn: &Turn, finish: Finish) -> Option<Finish> {
        // Answered by this result, though no model response was seen for it.
        self.unseen.retain(|&(message_id, past_result)| {
            if past_result {
                turn.steering.delivered(message_id);
            }
            !past_result
        });
        if !self.unseen.is_empty() {
            for (_, past_result) in &mut self.unseen {
                *past_result = true;
            }
            if let Finish::Completed { result_text } = finish
                && !result_text.is_empty()
            {
                self.answers.push(result_text);
            }
            return None;
        }
        if self.answers.is_empty() {
            return Some(finish);
        }
        let earlier = std::mem::take(&mut self.answers).join("\n\n");
        Some(match finish {
            Finish::Completed { result_text } if result_text.is_empty() => Finish::Completed {
                result_text: earlier,
            },
            Finish::Completed { result_text } => Finish::Completed {
                result_text: format!("{earlier}\n\n{result_text}"),
            },
            Finish::Failed { error, output } => Finish::Failed {
                error,
                output: Some(match output {
                    Some(output) => format!("{earlier}\n\n{output}"),
                    None => earlier,
                }),
            },
            Finish::Cancelled { reason } => Finish::Cancelled { reason },
        })
    }
}

/// What a CLI's message shows of a model response, with the response's id if it gives one.
enum Response<'a> {
    /// `message_start` (with partial messages): a response begins.
    Started(Option<&'a str>),
    /// An `assistant` message: part of a response, a new one if its id differs from the latest
    /// (or it has none).
    Message(Option<&'a str>),
}

fn model_response(message: &Value) -> Option<Response<'_>> {
    if message["type"] == "assistant" {
        Some(Response::Message(message["message"]["id"].as_str()))
    } else if message["type"] == "stream_event" && message["event"]["type"] == "message_start" {
        Some(Response::Started(
            message["event"]["message"]["id"].as_str(),
        ))
    } else {
        None
    }
}

fn is_session_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn user_message(text: &str) -> Value {
    json!({"type": "user", "message": {"role": "user", "content": text}})
}

/// The approval a tool-use request becomes.
fn describe_tool(request: &Value) -> (ApprovalKind, String) {
    let tool = request["tool_name"].as_str().unwrap_or("a tool");
    let input = &request["input"];
    match tool {
        "Bash" => (
            ApprovalKind::Command,
            format!(
                "run `{}`",
                truncate(input["command"].as_str().unwrap_or(""), 200)
            ),
        ),
        "Edit" | "MultiEdit" | "Write" | "NotebookEdit" => (
            ApprovalKind::FileChange,
            format!(
                "{} {}",
                if tool == "Write" { "write" } else { "edit" },
                input["file_path"]
                    .as_str()
                    .or(input["notebook_path"].as_str())
                    .unwrap_or("a file")
            ),
        ),
        other => (ApprovalKind::Tool, format!("use {other}")),
    }
}

/// What a turn has produced so far.
#[derive(Default)]
struct TurnState {
    session: Option<String>,
    /// Tool-use id → (tool name, input), until its result arrives.
    tools: HashMap<String, (String, Value)>,
    streamed_text: bool,
    /// See [`Launch::asks_first`].
    asks_first: bool,
    /// Commands announced but not started: they wait for their approval.
    unstarted: HashSet<String>,
    /// Commands a person denied: they never ran and get no command events.
    denied: HashSet<String>,
}

impl TurnState {
    /// Handles one message; `Some` when the turn is over.
    fn message(&mut self, turn: &Turn, message: &Value) -> Option<Finish> {
        match message["type"].as_str()? {
            "stream_event" => {
                let event = &message["event"];
                if event["type"] == "content_block_delta" && event["delta"]["type"] == "text_delta"
                {
                    self.streamed_text = true;
                    turn.emit(EventBody::AgentMessageDelta {
                        text: event["delta"]["text"].as_str()?.to_owned(),
                    });
                }
            }
            "assistant" => {
                for block in message["message"]["content"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    self.assistant_block(turn, block);
                }
            }
            "user" => {
                for block in message["message"]["content"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    if block["type"] == "tool_result" {
                        self.tool_result(turn, block);
                    }
                }
            }
            "result" => {
                let usage = &message["usage"];
                if usage.is_object() {
                    turn.emit(EventBody::Usage {
                        input_tokens: usage["input_tokens"].as_u64().unwrap_or(0),
                        output_tokens: usage["output_tokens"].as_u64().unwrap_or(0),
                    });
                }
                let text = message["result"].as_str().unwrap_or_default().to_owned();
                let failed = message["is_error"] == json!(true)
                    || message["subtype"].as_str().is_some_and(|s| s != "success");
                return Some(if failed {
                    Finish::Failed {
                        error: if text.is_empty() {
                            format!(
                                "the turn ended with `{}`",
                                message["subtype"].as_str().unwrap_or("an error")
                            )
                        } else {
                            text
                        },
                        output: None,
                    }
                } else {
                    Finish::Completed { result_text: text }
                });
            }
            _ => {}
        }
        None
    }

    fn assistant_block(&mut self, turn: &Turn, block: &Value) {
        match block["type"].as_str().unwrap_or_default() {
            "text" => {
                let text = block["text"].as_str().unwrap_or_default().to_owned();
                if !self.streamed_text && !text.is_empty() {
                    turn.emit(EventBody::AgentMessageDelta { text: text.clone() });
                }
                self.streamed_text = false;
                turn.emit(EventBody::AgentMessage { text });
            }
            "thinking" => {
                if let Some(text) = block["thinking"].as_str().filter(|t| !t.is_empty()) {
                    turn.emit(EventBody::AgentReasoning {
                        text: text.to_owned(),
                    });
                }
            }
            "tool_use" => {
                let id = block["id"].as_str().unwrap_or_default().to_owned();
                let name = block["name"].as_str().unwrap_or_default().to_owned();
                let input = block["input"].clone();
                if name == "Bash" && self.asks_first {
                    self.unstarted.insert(id.clone());
                } else if name == "Bash" {
                    turn.emit(EventBody::CommandStarted {
                        command_id: id.clone(),
                        command: input["command"].as_str().unwrap_or_default().to_owned(),
                    });
                } else if !is_file_tool(&name) && !is_centaur_tool(&name) {
                    turn.emit(EventBody::ToolCallStarted {
                        call_id: id.clone(),
                        tool: "harness".into(),
                        method: name.clone(),
                        arguments: input.clone(),
                    });
                }
                self.tools.insert(id, (name, input));
            }
            _ => {}
        }
    }

    fn tool_result(&mut self, turn: &Turn, block: &Value) {
        let id = block["tool_use_id"].as_str().unwrap_or_default();
        let Some((name, input)) = self.tools.remove(id) else {
            return;
        };
        let is_error = block["is_error"] == json!(true);
        let output = match &block["content"] {
            Value::String(text) => text.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::Object(_) => String::new(),
        };
        if name == "Bash" && self.denied.remove(id) {
            // It never ran: the approval's denial is its record.
        } else if name == "Bash" {
            // Run without asking (the CLI's own rules allowed it): started now, at its end.
            self.start(turn, id, &input);
            if !output.is_empty() {
                turn.emit(EventBody::CommandOutput {
                    command_id: id.to_owned(),
                    chunk: output,
                    at: None,
                });
            }
            turn.emit(EventBody::CommandFinished {
                command_id: id.to_owned(),
                exit_code: Some(if is_error { 1 } else { 0 }),
            });
        } else if is_file_tool(&name) {
            if !is_error {
                turn.emit(EventBody::FileChanged {
                    path: input["file_path"]
                        .as_str()
                        .or(input["notebook_path"].as_str())
                        .unwrap_or_default()
                        .to_owned(),
                    kind: if name == "Write" { "write" } else { "update" }.into(),
                });
            }
        } else if is_centaur_tool(&name) {
            // Centaur's own tools (its MCP server): the server recorded the call.
        } else {
            turn.emit(EventBody::ToolCallFinished {
                call_id: id.to_owned(),
                tool: "harness".into(),
                method: name,
                result: (!is_error).then(|| json!(output)),
                error: is_error.then_some(output),
                duration_ms: None,
                attachments: Vec::new(),
            });
        }
    }
}

impl TurnState {
    /// A command's approval came back: an approved command starts now; a denied one is
    /// remembered so its error result is not shown as a command that ran.
    fn decided(&mut self, turn: &Turn, id: &str, approved: bool) {
        if !self.unstarted.contains(id) {
            return;
        }
        if approved {
            let input = self
                .tools
                .get(id)
                .map(|(_, input)| input.clone())
                .unwrap_or_default();
            self.start(turn, id, &input);
        } else {
            self.unstarted.remove(id);
            self.denied.insert(id.to_owned());
        }
    }

    /// Emits `command.started` for a command still waiting to start.
    fn start(&mut self, turn: &Turn, id: &str, input: &Value) {
        if self.unstarted.remove(id) {
            turn.emit(EventBody::CommandStarted {
                command_id: id.to_owned(),
                command: input["command"].as_str().unwrap_or_default().to_owned(),
            });
        }
    }
}

/// A tool of Centaur's MCP server (`mcp__centaur__<tool>_<method>`): the server records its
/// calls in the thread, so the harness's view of them is not recorded again.
fn is_centaur_tool(name: &str) -> bool {
    name.strip_prefix("mcp__")
        .and_then(|rest| rest.strip_prefix(crate::tools::MCP_SERVER))
        .is_some_and(|rest| rest.starts_with("__"))
}

fn is_file_tool(name: &str) -> bool {
    matches!(name, "Edit" | "MultiEdit" | "Write" | "NotebookEdit")
}
