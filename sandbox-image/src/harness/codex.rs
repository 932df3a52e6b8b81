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
/// Codex's own background requests, off: the curated plugin sync (github.com,
/// api.github.com, chatgpt.com, at every start), analytics, feedback and the update check.
/// The sandbox could not reach those hosts anyway; each attempt was an `egress.denied` on the
/// thread.
const QUIET: [&str; 4] = [
    "features.plugins=false",
    "analytics.enabled=false",
    "feedback.enabled=false",
    "check_for_update_on_startup=false",
];

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
    /// Started with Centaur's MCP server (the server had tools then).
    mcp: bool,
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

    /// Starts `codex app-server`, with Centaur's tools as the MCP server `centaur` when `mcp`.
    async fn start(&mut self, mcp: bool) -> Result<(), Broke> {
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
        let mut command = tokio::process::Command::new(&program);
        command.arg("app-server");
        // Centaur's settings win over the user's `config.toml`: on the command line, Codex's
        // highest layer.
        for setting in QUIET {
            command.arg("-c").arg(setting);
        }
        if mcp {
            for setting in mcp_settings() {
                command.arg("-c").arg(setting);
            }
        }
        let mut child = command
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
            mcp,
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

        let approval = codex_policy(self.sandbox.approval_policy);
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
            self.start(crate::tools::offered(&self.sandbox.env).await)
                .await?;
        }
        let process = self.process.as_mut().expect("started");
        // Its answer (the turn's id) is read in the loop below: Codex may ask for an approval
        // before it answers. The turn's policy goes with it: the thread may have been given
        // another since the app-server started.
        let start_id = process
            .notify_request(
                "turn/start",
                json!({"threadId": process.thread_id,
                       "input": [{"type": "text", "text": turn.prompt()}],
                       "approvalPolicy": codex_policy(turn.sandbox.approval_policy)}),
            )
            .await?;
        let mut turn_id: Option<String> = None;
        let mut interrupt_pending = false;
        let mut state = TurnState::default();
        // Approvals borrow the turn while they wait; new messages are read on their own.
        let mut steering = turn.steering.take_messages();
        // `turn/steer` requests Codex has not answered yet: request id → the message sent.
        let mut steers: HashMap<u64, uuid::Uuid> = HashMap::new();
        let turn = &*turn;
        let mut approvals: FuturesUnordered<Pending<'_>> = FuturesUnordered::new();
        let mut interrupted_at: Option<tokio::time::Instant> = None;
        loop {
            let deadline = interrupted_at.map(|at| at + INTERRUPT_GRACE);
            let release_at = state.next_release();
            tokio::select! {
                line = process.stdout.next_line() => {
                    let line = line
                        .map_err(|e| Broke::Process(format!("reading from codex failed: {e}")))?
                        .ok_or_else(|| Broke::Process("codex app-server exited in the middle of a turn".into()))?;
                    tracing::trace!(target: "centaur_runner::codex", %line, "from codex");
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
                        state.turn_id = Some(id.clone());
                        turn_id = Some(id);
                        continue;
                    }
                    if message.get("method").is_none()
                        && let Some(message_id) = message["id"].as_u64().and_then(|id| steers.remove(&id))
                    {
                        // Taken into the running turn: the message is this turn's. Refused (the
                        // turn had just ended): it waits for the next turn.
                        match message.get("error") {
                            None => turn.steering.delivered(message_id),
                            Some(error) => tracing::debug!(%message_id, %error, "codex refused the steering; the message waits for the next turn"),
                        }
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
                                let item = message["params"]["itemId"].as_str().map(str::to_owned);
                                approvals.push(Box::pin(async move {
                                    let verdict = turn.approval(kind, summary, details).await;
                                    (id, item, verdict, json!({"decision": answer(verdict)}))
                                }));
                            }
                            None => {
                                process.send(&json!({"id": id, "error": {"code": -32601, "message": format!("centaur does not handle `{method}`")}})).await?;
                            }
                        }
                    }
                }
                Some((id, item, verdict, result)) = approvals.next(), if !approvals.is_empty() => {
                    process.send(&json!({"id": id, "result": result})).await?;
                    if let Some(item) = item {
                        state.approved(turn, &item, verdict);
                    }
                }
                _ = async { tokio::time::sleep_until(release_at.expect("set")).await }, if release_at.is_some() => {
                    state.release_due(turn);
                }
                Some(steer) = steering.recv(), if turn_id.is_some() => {
                    let sent = process.notify_request("turn/steer", json!({"threadId": process.thread_id, "expectedTurnId": turn_id, "input": [{"type": "text", "text": steer.text}]})).await;
                    if let Ok(request_id) = sent {
                        steers.insert(request_id, steer.message_id);
                    }
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

/// Centaur's tools as Codex's MCP server `centaur` (`centaur-tool mcp`, on the sandbox's
/// `PATH`), as `-c` settings. Approval is the Centaur server's job (an approval-gated method
/// waits for a person there), so Codex does not ask (`approve`; under `codex exec` it would
/// cancel the call); a call may wait that long, hence the hour.
fn mcp_settings() -> [String; 6] {
    let server = crate::tools::MCP_SERVER;
    [
        format!(r#"mcp_servers.{server}.command="centaur-tool""#),
        format!(r#"mcp_servers.{server}.args=["mcp"]"#),
        format!(
            r#"mcp_servers.{server}.env_vars=["{}"]"#,
            crate::tools::URL_VAR
        ),
        format!(r#"mcp_servers.{server}.default_tools_approval_mode="approve""#),
        format!("mcp_servers.{server}.startup_timeout_sec=30"),
        format!("mcp_servers.{server}.tool_timeout_sec=3600"),
    ]
}

/// Codex's name for a Centaur approval policy (`untrusted`: ask before any command that is not
/// known to be read-only).
fn codex_policy(policy: ApprovalPolicy) -> &'static str {
    match policy {
        ApprovalPolicy::Never => "never",
        ApprovalPolicy::OnRequest => "on-request",
        ApprovalPolicy::Always => "untrusted",
    }
}

#[async_trait]
impl Harness for Codex {
    async fn prepare(&mut self, _sandbox: &Sandbox) {
        if self.broken {
            return;
        }
        let mcp = crate::tools::offered(&self.sandbox.env).await;
        if mcp && self.process.as_ref().is_some_and(|p| !p.mcp) {
            // Tools appeared since Codex started (the server was still loading them): it starts
            // again with them, resuming its thread.
            tracing::info!("the server has tools now; codex starts again with them");
            if let Some(mut process) = self.process.take() {
                let _ = process.child.kill().await;
            }
        }
        if self.process.is_none() {
            let _ = self.start(mcp).await;
        }
    }

    async fn turn(&mut self, turn: &mut Turn) -> Finish {
        match self.run_turn(turn).await {
            Ok(finish) => finish,
            Err(Broke::Refused(error)) => Finish::Failed {
                error,
                output: None,
            },
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
            tracing::trace!(target: "centaur_runner::codex", %line, "from codex");
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
    /// The Codex turn this is, once Codex has said; items of other turns are not this turn's.
    turn_id: Option<String>,
    last_message: String,
    /// Codex's thread totals: before this turn's first model call, and the latest.
    usage_before: Option<Tokens>,
    usage_now: Option<Tokens>,
    error: Option<String>,
    commands: HashMap<String, Command>,
    /// A command item that has not started yet (no process) and was just announced: if
    /// Codex's next message asks to approve it, it waits for the decision; otherwise it starts.
    announced: Option<String>,
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Tokens {
    input: u64,
    output: u64,
}

impl Tokens {
    fn of(usage: &Value) -> Tokens {
        Tokens {
            input: usage["inputTokens"].as_u64().unwrap_or(0),
            output: usage["outputTokens"].as_u64().unwrap_or(0),
        }
    }
}

/// One of the turn's commands.
struct Command {
    command: String,
    /// `command.started` was emitted.
    started: bool,
    /// Until when its output is held back (see [`OUTPUT_HOLD`]); `None` before it starts.
    hold_until: Option<tokio::time::Instant>,
    /// Output Codex streamed that is not emitted yet.
    held: String,
    /// Output emitted as `command.output`.
    sent: String,
    /// It printed more than [`MAX_STREAMED_BYTES`]: the rest is dropped, and its end adds
    /// nothing from the whole output.
    past_limit: bool,
}

/// Output streamed per command (and kept by the runner to reconcile it); past it, the rest is
/// not sent, as with the shell harness.
const MAX_STREAMED_BYTES: usize = 16 * 1024 * 1024;

impl Command {
    /// A command Codex announced (its `commandExecution` item), not started yet.
    fn announced(item: &Value) -> Command {
        Command {
            command: item["command"].as_str().unwrap_or_default().to_owned(),
            started: false,
            hold_until: None,
            held: String::new(),
            sent: String::new(),
            past_limit: false,
        }
    }
}

/// How long a command's streamed output is held back before it is emitted live. Codex does
/// not stream what a command prints in its first moments (it reads that itself before it
/// announces the command); the whole output only comes with the command's end. Held back,
/// the output of a command that ends within this time reaches the thread whole and in order;
/// a longer one streams live after it, and what Codex never streamed comes at its end.
const OUTPUT_HOLD: Duration = Duration::from_secs(5);

impl TurnState {
    /// Handles one message from Codex; `Some` when the turn is over.
    fn notification(&mut self, turn: &Turn, message: &Value) -> Option<Finish> {
        let params = &message["params"];
        let method = message["method"].as_str()?;
        // Items of another turn (a command that outlived an interrupted turn) are not this
        // turn's.
        if let (Some(ours), Some(theirs)) = (&self.turn_id, params["turnId"].as_str())
            && ours != theirs
        {
            return None;
        }
        if let Some(id) = self.announced.clone() {
            if method == "item/commandExecution/requestApproval"
                && params["itemId"].as_str() == Some(id.as_str())
            {
                // It waits for its approval: not started.
                self.announced = None;
                return None;
            }
            // Anything that shows commands moving on (its output, another item, the turn's
            // end) means Codex did not ask: it runs. Other news (usage, text) changes nothing.
            let moves_on = matches!(
                method,
                "item/commandExecution/outputDelta"
                    | "item/started"
                    | "item/completed"
                    | "turn/completed"
            ) || message.get("id").is_some();
            if moves_on {
                self.announced = None;
                self.start(turn, &id);
            }
        }
        match method {
            "item/agentMessage/delta" => turn.emit(EventBody::AgentMessageDelta {
                text: params["delta"].as_str()?.to_owned(),
            }),
            "item/commandExecution/outputDelta" => {
                let id = params["itemId"].as_str()?;
                let chunk = params["delta"].as_str()?;
                self.output(turn, id, chunk);
            }
            "item/started" => {
                let item = &params["item"];
                if item["type"] == "commandExecution" {
                    let id = item["id"].as_str()?.to_owned();
                    self.commands.insert(id.clone(), Command::announced(item));
                    // Codex announces a command that needs an approval before it runs, without
                    // a process; one that runs at once comes with its process.
                    if item["processId"].is_null() {
                        self.announced = Some(id);
                    } else {
                        self.start(turn, &id);
                    }
                }
            }
            "item/completed" => self.item_completed(turn, &params["item"]),
            "thread/tokenUsage/updated" => {
                let usage = &params["tokenUsage"];
                let (total, last) = (Tokens::of(&usage["total"]), Tokens::of(&usage["last"]));
                if self.usage_before.is_none() {
                    self.usage_before = Some(Tokens {
                        input: total.input.saturating_sub(last.input),
                        output: total.output.saturating_sub(last.output),
                    });
                }
                self.usage_now = Some(total);
            }
            "error" if params["willRetry"] != json!(true) => {
                self.error = params["error"]["message"].as_str().map(str::to_owned);
            }
            "turn/completed" => {
                // Commands still open (an interrupted turn ends without their end): closed.
                let open: Vec<String> = self
                    .commands
                    .iter()
                    .filter(|(_, c)| c.started)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in open {
                    self.finish(turn, &id, None, None);
                }
                if let (Some(before), Some(now)) = (self.usage_before, self.usage_now) {
                    turn.emit(EventBody::Usage {
                        input_tokens: now.input.saturating_sub(before.input),
                        output_tokens: now.output.saturating_sub(before.output),
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
                        output: None,
                    },
                });
            }
            _ => {}
        }
        None
    }

    /// Emits `command.started` for a command not started yet.
    fn start(&mut self, turn: &Turn, id: &str) {
        let Some(command) = self.commands.get_mut(id) else {
            return;
        };
        if command.started {
            return;
        }
        command.started = true;
        command.hold_until = Some(tokio::time::Instant::now() + OUTPUT_HOLD);
        turn.emit(EventBody::CommandStarted {
            command_id: id.to_owned(),
            command: command.command.clone(),
        });
    }

    /// The decision on an approval Codex asked for `item`: an approved command starts now.
    fn approved(&mut self, turn: &Turn, item: &str, verdict: ApprovalResolution) {
        match verdict {
            ApprovalResolution::Approve | ApprovalResolution::ApproveForSession => {
                self.start(turn, item);
            }
            ApprovalResolution::Deny | ApprovalResolution::Cancelled => {}
        }
    }

    fn output(&mut self, turn: &Turn, id: &str, chunk: &str) {
        self.start(turn, id);
        let Some(command) = self.commands.get_mut(id) else {
            return;
        };
        if command.past_limit {
            return;
        }
        if command.sent.len() + command.held.len() + chunk.len() > MAX_STREAMED_BYTES {
            command.past_limit = true;
            command.held.push_str(&format!(
                "\n[output past {} MiB not streamed]\n",
                MAX_STREAMED_BYTES >> 20
            ));
            release(turn, id, command);
            return;
        }
        let holding = command
            .hold_until
            .is_some_and(|until| tokio::time::Instant::now() < until);
        if holding {
            command.held.push_str(chunk);
        } else {
            command.held.push_str(chunk);
            release(turn, id, command);
        }
    }

    /// When the next command's hold ends, if any holds output.
    fn next_release(&self) -> Option<tokio::time::Instant> {
        self.commands
            .values()
            .filter(|c| !c.held.is_empty())
            .filter_map(|c| c.hold_until)
            .min()
    }

    /// Emits the held output of the commands whose hold has ended.
    fn release_due(&mut self, turn: &Turn) {
        let now = tokio::time::Instant::now();
        for (id, command) in &mut self.commands {
            if command.hold_until.is_some_and(|until| until <= now) {
                release(turn, id, command);
            }
        }
    }

    /// Ends a command: what Codex says it printed (`whole`, its aggregated output) is
    /// reconciled with what was streamed, so the thread holds the output once; then
    /// `command.finished`.
    fn finish(&mut self, turn: &Turn, id: &str, whole: Option<&str>, exit_code: Option<i32>) {
        let Some(mut command) = self.commands.remove(id) else {
            return;
        };
        let streamed = format!("{}{}", command.sent, command.held);
        // Each piece still to send, and where it belongs when not after what came before.
        let rest: Vec<(String, Option<u64>)> = match whole {
            _ if command.past_limit => Vec::new(),
            None | Some("") => vec![(command.held.clone(), None)],
            Some(whole) if command.sent.is_empty() => {
                if whole.contains(streamed.as_str()) {
                    // Nothing emitted yet: the whole output, in order.
                    vec![(whole.to_owned(), None)]
                } else {
                    // Codex kept less than it streamed (it keeps a head and a tail of long
                    // output): what was streamed.
                    vec![(command.held.clone(), None)]
                }
            }
            Some(whole) => {
                if whole.starts_with(streamed.as_str()) {
                    vec![(whole[command.sent.len()..].to_owned(), None)]
                } else if let Some(at) = whole.find(streamed.as_str()) {
                    // Codex did not stream the start, and the command ran past the hold: the
                    // rest of what streamed, the missing start where it belongs (at 0), then
                    // what followed the streamed part.
                    vec![
                        (command.held.clone(), None),
                        (whole[..at].to_owned(), Some(0)),
                        (whole[at + streamed.len()..].to_owned(), None),
                    ]
                } else {
                    vec![(command.held.clone(), None)]
                }
            }
        };
        command.held.clear();
        for (chunk, at) in rest.into_iter().filter(|(c, _)| !c.is_empty()) {
            turn.emit(EventBody::CommandOutput {
                command_id: id.to_owned(),
                chunk,
                at,
            });
        }
        turn.emit(EventBody::CommandFinished {
            command_id: id.to_owned(),
            exit_code,
        });
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
                let never_ran = item["status"] == "declined"
                    && self.commands.get(id).is_none_or(|c| !c.started);
                if never_ran {
                    // Denied (or its approval cancelled): it never started, and the thread
                    // says so with its approval; no command events.
                    self.commands.remove(id);
                    return;
                }
                if !self.commands.contains_key(id) {
                    self.commands
                        .insert(id.to_owned(), Command::announced(item));
                }
                self.start(turn, id);
                self.finish(
                    turn,
                    id,
                    item["aggregatedOutput"].as_str(),
                    item["exitCode"].as_i64().map(|c| c as i32),
                );
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

/// Emits a command's held output.
fn release(turn: &Turn, id: &str, command: &mut Command) {
    if command.held.is_empty() {
        return;
    }
    let chunk = std::mem::take(&mut command.held);
    command.sent.push_str(&chunk);
    turn.emit(EventBody::CommandOutput {
        command_id: id.to_owned(),
        chunk,
        at: None,
    });
}

type Answer = fn(ApprovalResolution) -> &'static str;

/// An approval waiting for its decision: the request id, the item it is about, the verdict
/// and the answer to send.
type Pending<'a> =
    Pin<Box<dyn Future<Output = (Value, Option<String>, ApprovalResolution, Value)> + Send + 'a>>;

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

#[cfg(test)]
mod tests {
    //! Codex's messages, in the shapes `codex app-server` 0.169.0 sends them (seen on its
    //! stdout), through the turn's state.

    use super::*;
    use centaur_protocol::runner::{ApprovalPolicy, InputMessage};
    use tokio::sync::mpsc;

    const TURN: &str = "turn-1";

    fn turn() -> (Turn, mpsc::UnboundedReceiver<EventBody>) {
        let (events, received) = mpsc::unbounded_channel();
        let sandbox = Sandbox {
            workspace: PathBuf::from("/workspace"),
            env: Default::default(),
            approval_policy: ApprovalPolicy::Always,
        };
        let input: Vec<InputMessage> = Vec::new();
        let turn = Turn::new(
            uuid::Uuid::now_v7(),
            input,
            sandbox,
            events,
            Default::default(),
            crate::turn::Steering::unrecorded(mpsc::unbounded_channel().1),
            Default::default(),
        );
        (turn, received)
    }

    fn state() -> TurnState {
        TurnState {
            turn_id: Some(TURN.into()),
            ..TurnState::default()
        }
    }

    fn started(id: &str, process: Option<&str>) -> Value {
        json!({"method": "item/started", "params": {"turnId": TURN, "item": {
            "type": "commandExecution", "id": id, "command": "/bin/bash -lc 'x'",
            "processId": process, "status": "inProgress", "aggregatedOutput": null}}})
    }

    fn delta(id: &str, chunk: &str) -> Value {
        json!({"method": "item/commandExecution/outputDelta",
               "params": {"turnId": TURN, "itemId": id, "delta": chunk}})
    }

    fn completed(id: &str, status: &str, output: Option<&str>, exit: Option<i32>) -> Value {
        json!({"method": "item/completed", "params": {"turnId": TURN, "item": {
            "type": "commandExecution", "id": id, "command": "/bin/bash -lc 'x'",
            "status": status, "aggregatedOutput": output, "exitCode": exit}}})
    }

    fn drain(received: &mut mpsc::UnboundedReceiver<EventBody>) -> Vec<EventBody> {
        std::iter::from_fn(|| received.try_recv().ok()).collect()
    }

    fn output_of(events: &[EventBody]) -> Vec<&str> {
        events
            .iter()
            .filter_map(|e| match e {
                EventBody::CommandOutput { chunk, .. } => Some(chunk.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_command_that_ends_within_the_hold_gets_its_whole_output_once() {
        let (turn, mut received) = turn();
        let mut state = state();
        // Codex did not stream the first line.
        for message in [
            started("c", Some("7")),
            delta("c", "line2\n"),
            delta("c", "line3\n"),
            completed("c", "completed", Some("line1\nline2\nline3\n"), Some(0)),
        ] {
            assert!(state.notification(&turn, &message).is_none());
        }
        let events = drain(&mut received);
        assert!(matches!(events[0], EventBody::CommandStarted { .. }));
        assert_eq!(output_of(&events), ["line1\nline2\nline3\n"]);
        assert!(matches!(
            events.last(),
            Some(EventBody::CommandFinished {
                exit_code: Some(0),
                ..
            })
        ));
    }

    #[test]
    fn past_the_hold_output_streams_and_the_end_brings_what_was_not_streamed() {
        let (turn, mut received) = turn();
        let mut state = state();
        state.notification(&turn, &started("c", Some("7")));
        state.notification(&turn, &delta("c", "b\n"));
        // The hold ends.
        state.commands.get_mut("c").expect("open").hold_until = Some(tokio::time::Instant::now());
        state.release_due(&turn);
        state.notification(&turn, &delta("c", "c\n"));
        state.notification(
            &turn,
            &completed("c", "completed", Some("b\nc\nd\n"), Some(1)),
        );
        assert_eq!(output_of(&drain(&mut received)), ["b\n", "c\n", "d\n"]);

        // Codex missed the beginning of one that ran past the hold: it comes last, marked
        // as belonging at the start, so the output put together is whole and in order.
        state.notification(&turn, &started("e", Some("8")));
        state.notification(&turn, &delta("e", "2\n"));
        state.commands.get_mut("e").expect("open").hold_until = Some(tokio::time::Instant::now());
        state.release_due(&turn);
        state.notification(
            &turn,
            &completed("e", "completed", Some("1\n2\n3\n"), Some(0)),
        );
        let events = drain(&mut received);
        assert_eq!(output_of(&events), ["2\n", "1\n", "3\n"]);
        let mut output = String::new();
        for event in &events {
            if let EventBody::CommandOutput { chunk, at, .. } = event {
                match at {
                    Some(at) => output.insert_str(usize::try_from(*at).unwrap(), chunk),
                    None => output.push_str(chunk),
                }
            }
        }
        assert_eq!(output, "1\n2\n3\n");
    }

    #[test]
    fn a_command_waiting_for_approval_has_not_started_and_a_denied_one_never_does() {
        let (turn, mut received) = turn();
        let mut state = state();
        let ask = json!({"method": "item/commandExecution/requestApproval", "id": 0,
                         "params": {"turnId": TURN, "itemId": "c", "command": "x"}});
        state.notification(&turn, &started("c", None));
        state.notification(&turn, &ask);
        assert!(drain(&mut received).is_empty());
        state.approved(&turn, "c", ApprovalResolution::Deny);
        state.notification(&turn, &completed("c", "declined", None, None));
        assert!(drain(&mut received).is_empty());

        // Approved: it starts when the answer goes back, then runs.
        state.notification(&turn, &started("d", None));
        state.notification(&turn, &ask_for("d"));
        assert!(drain(&mut received).is_empty());
        state.approved(&turn, "d", ApprovalResolution::Approve);
        assert!(matches!(
            drain(&mut received)[..],
            [EventBody::CommandStarted { .. }]
        ));
        state.notification(&turn, &completed("d", "completed", Some("ok\n"), Some(0)));
        assert_eq!(output_of(&drain(&mut received)), ["ok\n"]);

        // News that does not move commands on (usage, another turn's items) comes between
        // the announcement and the request: still not started.
        state.notification(&turn, &started("f", None));
        state.notification(
            &turn,
            &json!({"method": "thread/tokenUsage/updated", "params": {"turnId": TURN, "tokenUsage": {
                "total": {"inputTokens": 1, "outputTokens": 1}, "last": {"inputTokens": 1, "outputTokens": 1}}}}),
        );
        state.notification(
            &turn,
            &json!({"method": "item/started", "params": {"turnId": "other", "item": {
            "type": "commandExecution", "id": "z", "command": "y", "processId": "9"}}}),
        );
        state.notification(&turn, &ask_for("f"));
        assert!(drain(&mut received).is_empty());
        state.approved(&turn, "f", ApprovalResolution::Deny);
        state.notification(&turn, &completed("f", "declined", None, None));
        assert!(drain(&mut received).is_empty());

        // Announced without a process and not asked about: it starts once commands move on.
        state.notification(&turn, &started("e", None));
        assert!(drain(&mut received).is_empty());
        state.notification(&turn, &delta("e", "x"));
        assert!(matches!(
            drain(&mut received)[..],
            [EventBody::CommandStarted { .. }]
        ));
    }

    /// A command that prints more than the runner streams: the rest is dropped with a note,
    /// and its end adds nothing (the runner keeps a bounded amount per command).
    #[test]
    fn output_past_the_limit_is_not_streamed_or_kept() {
        let (turn, mut received) = turn();
        let mut state = state();
        state.notification(&turn, &started("c", Some("7")));
        let big = "x".repeat(MAX_STREAMED_BYTES - 10);
        state.notification(&turn, &delta("c", &big));
        state.notification(&turn, &delta("c", "more than the limit"));
        state.notification(&turn, &delta("c", "and more"));
        assert!(state.commands["c"].sent.len() <= MAX_STREAMED_BYTES + 64);
        state.notification(&turn, &completed("c", "completed", Some(&big), Some(0)));
        let events = drain(&mut received);
        let output: String = output_of(&events).concat();
        assert!(output.starts_with(&big));
        assert!(
            output.ends_with("[output past 16 MiB not streamed]\n"),
            "{}",
            &output[big.len()..]
        );
        assert!(!output.contains("more than the limit"));
        assert!(matches!(
            events.last(),
            Some(EventBody::CommandFinished { .. })
        ));
    }

    fn ask_for(id: &str) -> Value {
        json!({"method": "item/commandExecution/requestApproval", "id": 1,
               "params": {"turnId": TURN, "itemId": id, "command": "x"}})
    }

    #[test]
    fn usage_is_the_turns_total_and_other_turns_items_are_not_ours() {
        let (turn, mut received) = turn();
        let mut state = state();
        let usage = |input: u64, output: u64| {
            json!({"method": "thread/tokenUsage/updated", "params": {"turnId": TURN, "tokenUsage": {
                "total": {"inputTokens": input, "outputTokens": output},
                "last": {"inputTokens": 42, "outputTokens": 7}}}})
        };
        // The thread had 100 / 20 before this turn; two calls of 42 / 7.
        state.notification(&turn, &usage(142, 27));
        state.notification(&turn, &usage(184, 34));
        // A command of an earlier turn ends now: not this turn's.
        let mut stray = completed("old", "completed", Some("late\n"), Some(0));
        stray["params"]["turnId"] = json!("turn-0");
        state.notification(&turn, &stray);
        let done = json!({"method": "turn/completed", "params": {"turn": {"id": TURN, "status": "completed"}}});
        assert!(matches!(
            state.notification(&turn, &done),
            Some(Finish::Completed { .. })
        ));
        assert_eq!(
            drain(&mut received),
            [EventBody::Usage {
                input_tokens: 84,
                output_tokens: 14
            }]
        );
    }
}
