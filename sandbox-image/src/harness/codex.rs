//! `codex`: drives `codex app-server` over stdio (JSON-RPC, one message per line, without the
//! `jsonrpc` field). One app-server process and one Codex thread per sandbox: the thread id is
//! kept in the workspace, so a new sandbox for the same Centaur thread resumes the
//! conversation (`thread/resume`).
//!
//! Codex's items become Centaur events; its approval requests become Centaur approvals and
//! their decisions go back as its answers. Codex runs without its own sandbox: the bubblewrap
//! sandbox around it is the boundary.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use centaur_protocol::runner::{ApprovalPolicy, Finish};
use centaur_protocol::{ApprovalKind, ApprovalResolution, EventBody};
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::{Harness, truncate};
use crate::turn::{Sandbox, Turn};

/// Where Codex keeps its state, inside the workspace so it outlives the sandbox.
const CODEX_HOME: &str = ".centaur/codex";
/// An optional `config.toml` for Codex (model provider and the like), given in the
/// attachment's environment; it never holds a secret, only the name of the variable with the
/// placeholder.
pub const CONFIG_VAR: &str = "CENTAUR_CODEX_CONFIG_TOML";
/// How long an interrupted turn may take to wind down before the process is killed.
const INTERRUPT_GRACE: Duration = Duration::from_secs(10);
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Codex {
    sandbox: Sandbox,
    process: Option<Process>,
    broken: bool,
}

struct Process {
    child: Child,
    /// Registered with the runner's process registry: it outlives turns, its children do not.
    _owned: crate::tree::Owned,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    next_id: u64,
    thread_id: String,
}

/// Why a turn could not go on.
enum Broke {
    /// The process died or spoke something that is not the protocol.
    Process(String),
    /// Codex answered a request with an error.
    Refused(String),
}

impl Codex {
    pub fn new(sandbox: &Sandbox) -> Codex {
        Codex {
            sandbox: sandbox.clone(),
            process: None,
            broken: false,
        }
    }

    fn home(&self) -> PathBuf {
        self.sandbox.workspace.join(CODEX_HOME)
    }

    async fn start(&mut self) -> Result<(), Broke> {
        let home = self.home();
        std::fs::create_dir_all(&home)
            .map_err(|e| Broke::Process(format!("cannot create {}: {e}", home.display())))?;
        let mut env = self.sandbox.env.clone();
        if let Some(config) = env.remove(CONFIG_VAR) {
            std::fs::write(home.join("config.toml"), config)
                .map_err(|e| Broke::Process(format!("cannot write Codex's config: {e}")))?;
        }
        let program = env
            .get("CENTAUR_CODEX_BIN")
            .cloned()
            .unwrap_or_else(|| "codex".into());
        let mut child = tokio::process::Command::new(&program)
            .arg("app-server")
            .current_dir(&self.sandbox.workspace)
            .envs(&env)
            .env("CODEX_HOME", &home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Broke::Process(format!("cannot start `{program} app-server`: {e}")))?;
        let owned = crate::tree::own(child.id(), crate::tree::Lifetime::Sandbox);
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut process = Process {
            child,
            _owned: owned,
            stdin,
            stdout,
            next_id: 1,
            thread_id: String::new(),
        };
        let version = env!("CARGO_PKG_VERSION");
        tokio::time::timeout(
            START_TIMEOUT,
            process.request(
                "initialize",
                json!({"clientInfo": {"name": "centaur-runner", "title": "Centaur", "version": version}}),
            ),
        )
        .await
        .map_err(|_| Broke::Process("codex app-server did not answer `initialize`".into()))??;
        process.send(&json!({"method": "initialized"})).await?;

        let approval = match self.sandbox.approval_policy {
            ApprovalPolicy::Never => "never",
            ApprovalPolicy::OnRequest => "on-request",
            ApprovalPolicy::Always => "untrusted",
        };
        let cwd = self.sandbox.workspace.display().to_string();
        let saved = home.join("centaur-thread-id");
        let resumed = match std::fs::read_to_string(&saved) {
            Ok(thread_id) if !thread_id.trim().is_empty() => process
                .request(
                    "thread/resume",
                    json!({"threadId": thread_id.trim(), "cwd": cwd, "approvalPolicy": approval,
                           "sandbox": "danger-full-access"}),
                )
                .await
                .ok(),
            _ => None,
        };
        let thread = match resumed {
            Some(thread) => thread,
            None => {
                process
                    .request(
                        "thread/start",
                        json!({"cwd": cwd, "approvalPolicy": approval, "sandbox": "danger-full-access"}),
                    )
                    .await?
            }
        };
        process.thread_id = thread["thread"]["id"]
            .as_str()
            .ok_or_else(|| Broke::Process("codex started a thread without an id".into()))?
            .to_owned();
        let _ = std::fs::write(&saved, &process.thread_id);
        self.process = Some(process);
        Ok(())
    }

    async fn run_turn(&mut self, turn: &mut Turn) -> Result<Finish, Broke> {
        if self.process.is_none() {
            self.start().await?;
        }
        let process = self.process.as_mut().expect("started");
        // Its answer (the turn's id) is read in the loop below: Codex may ask for an approval
        // before it answers.
        let start_id = process
            .notify_request(
                "turn/start",
                json!({"threadId": process.thread_id, "input": [{"type": "text", "text": turn.prompt()}]}),
            )
            .await?;
        let mut turn_id: Option<String> = None;
        let mut interrupt_pending = false;
        let mut state = TurnState::default();
        // Approvals borrow the turn while they wait; new messages are read on their own.
        let mut steering =
            std::mem::replace(&mut turn.steering, tokio::sync::mpsc::unbounded_channel().1);
        let turn = &*turn;
        let mut approvals: FuturesUnordered<Pending<'_>> = FuturesUnordered::new();
        let mut interrupted_at: Option<tokio::time::Instant> = None;
        loop {
            let deadline = interrupted_at.map(|at| at + INTERRUPT_GRACE);
            tokio::select! {
                line = process.stdout.next_line() => {
                    let line = line
                        .map_err(|e| Broke::Process(format!("reading from codex failed: {e}")))?
                        .ok_or_else(|| Broke::Process("codex app-server exited in the middle of a turn".into()))?;
                    let message: Value = serde_json::from_str(&line).map_err(|_| {
                        Broke::Process(format!("codex app-server printed something that is not JSON-RPC: {}", truncate(&line, 200)))
                    })?;
                    if message.get("method").is_none() && message["id"] == json!(start_id) {
                        if let Some(error) = message.get("error") {
                            return Err(Broke::Refused(format!(
                                "codex refused the turn: {}",
                                error["message"].as_str().unwrap_or("no reason given")
                            )));
                        }
                        let id = message["result"]["turn"]["id"].as_str().unwrap_or_default().to_owned();
                        if interrupt_pending {
                            process.notify_request("turn/interrupt", json!({"threadId": process.thread_id, "turnId": id})).await?;
                        }
                        turn_id = Some(id);
                        continue;
                    }
                    if let Some(finish) = state.notification(turn, &message) {
                        return Ok(finish);
                    }
                    if let (Some(id), Some(method)) = (message.get("id"), message["method"].as_str()) {
                        // A request from Codex: an approval, or something we do not offer.
                        match approval_request(method, &message["params"]) {
                            Some((kind, summary, details, answer)) => {
                                let id = id.clone();
                                approvals.push(Box::pin(async move {
                                    let verdict = turn.approval(kind, summary, details).await;
                                    (id, json!({"decision": answer(verdict)}))
                                }));
                            }
                            None => {
                                process.send(&json!({"id": id, "error": {"code": -32601, "message": format!("centaur does not handle `{method}`")}})).await?;
                            }
                        }
                    }
                }
                Some((id, result)) = approvals.next(), if !approvals.is_empty() => {
                    process.send(&json!({"id": id, "result": result})).await?;
                }
                Some(text) = steering.recv(), if turn_id.is_some() => {
                    let _ = process.notify_request("turn/steer", json!({"threadId": process.thread_id, "expectedTurnId": turn_id, "input": [{"type": "text", "text": text}]})).await;
                }
                _ = turn.cancelled.cancelled(), if interrupted_at.is_none() => {
                    interrupted_at = Some(tokio::time::Instant::now());
                    match &turn_id {
                        Some(id) => {
                            process.notify_request("turn/interrupt", json!({"threadId": process.thread_id, "turnId": id})).await?;
                        }
                        // Sent as soon as Codex says which turn it started.
                        None => interrupt_pending = true,
                    }
                }
                _ = async { tokio::time::sleep_until(deadline.expect("set")).await }, if deadline.is_some() => {
                    return Err(Broke::Process("codex did not stop after an interrupt".into()));
                }
            }
        }
    }
}

#[async_trait]
impl Harness for Codex {
    async fn turn(&mut self, turn: &mut Turn) -> Finish {
        match self.run_turn(turn).await {
            Ok(finish) => finish,
            Err(Broke::Refused(error)) => Finish::Failed { error },
            Err(Broke::Process(error)) => {
                self.broken = true;
                if let Some(mut process) = self.process.take() {
                    let _ = process.child.kill().await;
                }
                Finish::Failed {
                    error: format!("{error}; the sandbox will be replaced"),
                }
            }
        }
    }

    fn broken(&self) -> bool {
        self.broken
    }
}

impl Process {
    async fn send(&mut self, message: &Value) -> Result<(), Broke> {
        let mut line = serde_json::to_vec(message).expect("serializable");
        line.push(b'\n');
        self.stdin
            .write_all(&line)
            .await
            .map_err(|e| Broke::Process(format!("writing to codex failed: {e}")))
    }

    /// Sends a request whose answer the turn loop skips (it only matters that it was sent).
    /// Sends a request without waiting for its answer; returns its id.
    async fn notify_request(&mut self, method: &str, params: Value) -> Result<u64, Broke> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"id": id, "method": method, "params": params}))
            .await?;
        Ok(id)
    }

    /// Sends a request and waits for its answer; notifications before it are dropped (only
    /// used outside turns).
    async fn request(&mut self, method: &str, params: Value) -> Result<Value, Broke> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"id": id, "method": method, "params": params}))
            .await?;
        loop {
            let line = self
                .stdout
                .next_line()
                .await
                .map_err(|e| Broke::Process(format!("reading from codex failed: {e}")))?
                .ok_or_else(|| {
                    Broke::Process(format!("codex app-server exited during `{method}`"))
                })?;
            let message: Value = serde_json::from_str(&line).map_err(|_| {
                Broke::Process(format!(
                    "codex app-server printed something that is not JSON-RPC: {}",
                    truncate(&line, 200)
                ))
            })?;
            if message.get("method").is_some() {
                continue;
            }
            if message["id"] == json!(id) {
                if let Some(error) = message.get("error") {
                    return Err(Broke::Refused(format!(
                        "codex refused `{method}`: {}",
                        error["message"].as_str().unwrap_or("no reason given")
                    )));
                }
                return Ok(message["result"].clone());
            }
        }
    }
}

/// What a turn has produced so far.
#[derive(Default)]
struct TurnState {
    last_message: String,
    usage: Option<(u64, u64)>,
    error: Option<String>,
    commands: HashMap<String, ()>,
}

impl TurnState {
    /// Handles one message from Codex; `Some` when the turn is over.
    fn notification(&mut self, turn: &Turn, message: &Value) -> Option<Finish> {
        let params = &message["params"];
        match message["method"].as_str()? {
            "item/agentMessage/delta" => turn.emit(EventBody::AgentMessageDelta {
                text: params["delta"].as_str()?.to_owned(),
            }),
            "item/commandExecution/outputDelta" => turn.emit(EventBody::CommandOutput {
                command_id: params["itemId"].as_str()?.to_owned(),
                chunk: params["delta"].as_str()?.to_owned(),
            }),
            "item/started" => {
                let item = &params["item"];
                if item["type"] == "commandExecution" {
                    let id = item["id"].as_str()?.to_owned();
                    self.commands.insert(id.clone(), ());
                    turn.emit(EventBody::CommandStarted {
                        command_id: id,
                        command: item["command"].as_str().unwrap_or_default().to_owned(),
                    });
                }
            }
            "item/completed" => self.item_completed(turn, &params["item"]),
            "thread/tokenUsage/updated" => {
                let last = &params["tokenUsage"]["last"];
                self.usage = Some((
                    last["inputTokens"].as_u64().unwrap_or(0),
                    last["outputTokens"].as_u64().unwrap_or(0),
                ));
            }
            "error" if params["willRetry"] != json!(true) => {
                self.error = params["error"]["message"].as_str().map(str::to_owned);
            }
            "turn/completed" => {
                if let Some((input_tokens, output_tokens)) = self.usage {
                    turn.emit(EventBody::Usage {
                        input_tokens,
                        output_tokens,
                    });
                }
                let finished = &params["turn"];
                return Some(match finished["status"].as_str().unwrap_or("failed") {
                    "completed" => Finish::Completed {
                        result_text: std::mem::take(&mut self.last_message),
                    },
                    "interrupted" => Finish::Cancelled {
                        reason: "interrupted".into(),
                    },
                    _ => Finish::Failed {
                        error: finished["error"]["message"]
                            .as_str()
                            .map(str::to_owned)
                            .or_else(|| self.error.take())
                            .unwrap_or_else(|| "the Codex turn failed".into()),
                    },
                });
            }
            _ => {}
        }
        None
    }

    fn item_completed(&mut self, turn: &Turn, item: &Value) {
        match item["type"].as_str().unwrap_or_default() {
            "agentMessage" => {
                let text = item["text"].as_str().unwrap_or_default().to_owned();
                self.last_message = text.clone();
                turn.emit(EventBody::AgentMessage { text });
            }
            "reasoning" => {
                let parts: Vec<&str> = item["summary"]
                    .as_array()
                    .into_iter()
                    .chain(item["content"].as_array())
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                if !parts.is_empty() {
                    turn.emit(EventBody::AgentReasoning {
                        text: parts.join("\n"),
                    });
                }
            }
            "commandExecution" => {
                let Some(id) = item["id"].as_str() else {
                    return;
                };
                if self.commands.remove(id).is_none() {
                    turn.emit(EventBody::CommandStarted {
                        command_id: id.to_owned(),
                        command: item["command"].as_str().unwrap_or_default().to_owned(),
                    });
                }
                turn.emit(EventBody::CommandFinished {
                    command_id: id.to_owned(),
                    exit_code: item["exitCode"].as_i64().map(|c| c as i32),
                });
            }
            "fileChange" => {
                for change in item["changes"].as_array().into_iter().flatten() {
                    turn.emit(EventBody::FileChanged {
                        path: change["path"].as_str().unwrap_or_default().to_owned(),
                        kind: change["kind"]["type"]
                            .as_str()
                            .unwrap_or("update")
                            .to_owned(),
                    });
                }
            }
            _ => {}
        }
    }
}

type Answer = fn(ApprovalResolution) -> &'static str;

/// An approval waiting for its decision: the request id and the answer to send.
type Pending<'a> = Pin<Box<dyn Future<Output = (Value, Value)> + Send + 'a>>;

/// Codex's approval requests as Centaur approvals: kind, summary, details, and how to answer.
fn approval_request(method: &str, params: &Value) -> Option<(ApprovalKind, String, Value, Answer)> {
    fn answer(verdict: ApprovalResolution) -> &'static str {
        match verdict {
            ApprovalResolution::Approve => "accept",
            ApprovalResolution::ApproveForSession => "acceptForSession",
            ApprovalResolution::Deny => "decline",
            ApprovalResolution::Cancelled => "cancel",
        }
    }
    match method {
        "item/commandExecution/requestApproval" => {
            let command = params["command"].as_str().unwrap_or("a command");
            Some((
                ApprovalKind::Command,
                format!("run `{}`", truncate(command, 200)),
                json!({"command": command, "cwd": params["cwd"], "reason": params["reason"]}),
                answer,
            ))
        }
        "item/fileChange/requestApproval" => Some((
            ApprovalKind::FileChange,
            params["reason"]
                .as_str()
                .map(|r| format!("change files: {r}"))
                .unwrap_or_else(|| "change files".into()),
            json!({"reason": params["reason"], "grant_root": params["grantRoot"]}),
            answer,
        )),
        _ => None,
    }
}
