//! One tool's long-lived Python worker: started in its jail, spoken to in one JSON message per
//! line ([`centaur_protocol::tools::WorkerRequest`] and
//! [`centaur_protocol::tools::WorkerMessage`]), restarted when it dies.
//!
//! A [`Worker`] is the running process: calls are written to its stdin and answered, by id,
//! from its stdout in any order; its log frames and stderr go to the server's log (target
//! `centaur_server::tools`, field `tool`). When it exits, every call still waiting fails with
//! the exit and the last line of its stderr. Dropping the last handle kills its process group,
//! so a retired worker ends once the calls holding it have ended.

use std::collections::{HashMap, VecDeque};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use centaur_protocol::tools::{
    CallContext, LogLevel, MethodInfo, WORKER_PROTOCOL, WorkerError, WorkerMessage, WorkerRequest,
};
use serde_json::{Map, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, Command};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::attachments::NewAttachment;
use super::registry::Invoked;

/// The longest frame a worker may send; a longer one ends the worker.
pub const MAX_FRAME: usize = 16 << 20;
/// A call's attachments together, at most.
pub const MAX_ATTACHMENTS: usize = 10 << 20;
/// How long a worker may take to import its plugin and say it is ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a description may take.
pub const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(60);
/// A line of stderr longer than this is not logged (a note says so instead).
const MAX_STDERR_LINE: usize = 4096;
/// The stderr lines kept to explain an exit.
const STDERR_TAIL: usize = 20;
/// The log target of everything a worker says.
const TARGET: &str = "centaur_server::tools";

/// Why a worker did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the worker could not be started: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("the worker did not say it was ready within {} s: {}", READY_TIMEOUT.as_secs(), .0)]
    NotReady(String),
    #[error("the worker exited before it was ready ({0})")]
    Exited(String),
    #[error(
        "the worker speaks protocol {0}, this server {WORKER_PROTOCOL}: the SDK under the data folder is not this server's"
    )]
    Protocol(u32),
    #[error("the worker's first frame is not `ready`: {0}")]
    NotAReadyFrame(String),
}

/// Why a description failed (the tool is then broken with this reason).
#[derive(Debug, thiserror::Error)]
pub enum DescribeError {
    #[error("describing the tool could not start: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("describing the tool took over {} s", DESCRIBE_TIMEOUT.as_secs())]
    Timeout,
    #[error("{0}")]
    Failed(String),
    #[error("the description is not a `ready` frame: {0}")]
    NotAReadyFrame(String),
    #[error("the SDK speaks protocol {0}, this server {WORKER_PROTOCOL}")]
    Protocol(u32),
}

/// Why a call got no value.
#[derive(Debug, thiserror::Error)]
pub enum CallFailure {
    /// The worker answered with an error frame.
    #[error("{}", .0.message)]
    Worker(WorkerError),
    /// The worker ended (or was ended) before answering.
    #[error("{0}")]
    Exited(String),
    /// No answer within the timeout.
    #[error("no answer in time")]
    Timeout,
    /// The call's attachments were refused (too large, not base64).
    #[error("{0}")]
    Attachments(String),
}

type Answer = Result<Invoked, CallFailure>;

struct Pending {
    answer: oneshot::Sender<Answer>,
    attachments: Vec<NewAttachment>,
    attachment_bytes: usize,
}

/// What the worker's tasks and its handle share.
struct Shared {
    tool: String,
    pid: Option<i32>,
    pending: Mutex<HashMap<Uuid, Pending>>,
    /// Why the worker ended, once it has.
    ended: Mutex<Option<String>>,
    stderr_tail: Mutex<VecDeque<String>>,
    /// Set once the process group was killed or is known to be empty.
    group_gone: AtomicBool,
}

impl Shared {
    fn kill_group(&self) {
        if let Some(pid) = self.pid
            && !self.group_gone.swap(true, Ordering::SeqCst)
        {
            // SAFETY: plain signal delivery to the worker's own process group.
            unsafe { libc::killpg(pid, libc::SIGKILL) };
        }
    }

    fn last_stderr_line(&self) -> Option<String> {
        self.stderr_tail
            .lock()
            .expect("stderr lock")
            .back()
            .cloned()
    }

    /// Fails every call still waiting with `reason`.
    fn end(&self, reason: String) {
        let pending: Vec<Pending> = {
            let mut ended = self.ended.lock().expect("ended lock");
            ended.get_or_insert_with(|| reason.clone());
            self.pending
                .lock()
                .expect("pending lock")
                .drain()
                .map(|(_, p)| p)
                .collect()
        };
        for call in pending {
            let _ = call.answer.send(Err(CallFailure::Exited(reason.clone())));
        }
    }

    fn ended(&self) -> Option<String> {
        self.ended.lock().expect("ended lock").clone()
    }
}

/// A running worker.
pub struct Worker {
    stdin: tokio::sync::Mutex<ChildStdin>,
    shared: Arc<Shared>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shared.kill_group();
    }
}

impl Worker {
    /// Starts `command` (from [`super::jail::Launch::command`]) and waits for its `ready`.
    pub async fn start(tool: &str, mut command: Command) -> Result<Worker, StartError> {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(StartError::Spawn)?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(StartError::Spawn(std::io::Error::other(
                "the worker's pipes were not set up",
            )));
        };
        let shared = Arc::new(Shared {
            tool: tool.to_owned(),
            pid: child.id().and_then(|p| i32::try_from(p).ok()),
            pending: Mutex::new(HashMap::new()),
            ended: Mutex::new(None),
            stderr_tail: Mutex::new(VecDeque::new()),
            group_gone: AtomicBool::new(false),
        });
        let worker = Worker {
            stdin: tokio::sync::Mutex::new(stdin),
            shared: shared.clone(),
        };
        let stderr_done = tokio::spawn(log_stderr(shared.clone(), stderr));
        let (exit_tx, exit_rx) = oneshot::channel();
        tokio::spawn({
            let shared = shared.clone();
            async move {
                let status = child.wait().await;
                // What the worker left behind in its group (without bubblewrap) goes with it.
                shared.kill_group();
                let _ = exit_tx.send(status);
            }
        });
        let mut stdout = BufReader::with_capacity(64 << 10, stdout);
        let first = tokio::time::timeout(READY_TIMEOUT, read_line(&mut stdout, MAX_FRAME)).await;
        let exited = |exit_rx, stderr_done| {
            let shared = shared.clone();
            async move {
                let status = exit_status(exit_rx).await;
                let _ = tokio::time::timeout(Duration::from_secs(2), stderr_done).await;
                exit_reason(&status, shared.last_stderr_line())
            }
        };
        let line = match first {
            Err(_) => {
                return Err(StartError::NotReady(
                    shared
                        .last_stderr_line()
                        .unwrap_or_else(|| "it wrote nothing".into()),
                ));
            }
            Ok(Ok(Line::Full(line))) => line,
            Ok(Ok(Line::TooLong)) => {
                return Err(StartError::NotAReadyFrame(format!(
                    "a frame over {MAX_FRAME} bytes"
                )));
            }
            Ok(Ok(Line::End) | Err(_)) => {
                return Err(StartError::Exited(exited(exit_rx, stderr_done).await));
            }
        };
        match serde_json::from_slice::<WorkerMessage>(&line) {
            Ok(WorkerMessage::Ready { protocol, .. }) if protocol == WORKER_PROTOCOL => {}
            Ok(WorkerMessage::Ready { protocol, .. }) => {
                return Err(StartError::Protocol(protocol));
            }
            Ok(
                WorkerMessage::Result { .. }
                | WorkerMessage::Error { .. }
                | WorkerMessage::Log { .. }
                | WorkerMessage::Attachment { .. },
            )
            | Err(_) => return Err(StartError::NotAReadyFrame(preview(&line))),
        }
        tokio::spawn(read_frames(shared, stdout, exit_rx, stderr_done));
        Ok(worker)
    }

    /// Whether the worker has ended (a new one must take the next call).
    pub fn has_ended(&self) -> bool {
        self.shared.ended().is_some()
    }

    /// Kills the worker now (its waiting calls fail).
    pub fn kill(&self) {
        self.shared.kill_group();
    }

    /// Calls `method`; the answer within `timeout`.
    pub async fn call(
        &self,
        method: &str,
        arguments: Map<String, Value>,
        context: CallContext,
        timeout: Duration,
    ) -> Answer {
        let id = Uuid::new_v4();
        let (answer, answered) = oneshot::channel();
        {
            let ended = self.shared.ended.lock().expect("ended lock");
            if let Some(reason) = ended.as_ref() {
                return Err(CallFailure::Exited(reason.clone()));
            }
            self.shared.pending.lock().expect("pending lock").insert(
                id,
                Pending {
                    answer,
                    attachments: Vec::new(),
                    attachment_bytes: 0,
                },
            );
        }
        // A caller that goes away (its request dropped) leaves no waiting call behind.
        let _waiting = Waiting {
            shared: &self.shared,
            id,
        };
        let request = WorkerRequest::Call {
            id,
            method: method.to_owned(),
            arguments,
            context,
        };
        let mut frame = serde_json::to_vec(&request).expect("a call frame is JSON");
        frame.push(b'\n');
        let exchange = async {
            {
                let mut stdin = self.stdin.lock().await;
                let written = match stdin.write_all(&frame).await {
                    Ok(()) => stdin.flush().await,
                    Err(error) => Err(error),
                };
                // A worker that cannot be written to has ended: its reader fails the call.
                if let Err(error) = written {
                    tracing::debug!(target: TARGET, tool = %self.shared.tool, %error, "writing to the worker failed");
                }
            }
            answered.await
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => Err(CallFailure::Timeout),
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(CallFailure::Exited(
                self.shared
                    .ended()
                    .unwrap_or_else(|| "the worker ended".into()),
            )),
        }
    }
}

/// Removes a call from the waiting ones when its caller is done with it.
struct Waiting<'a> {
    shared: &'a Shared,
    id: Uuid,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.shared
            .pending
            .lock()
            .expect("pending lock")
            .remove(&self.id);
    }
}

/// Reads the worker's frames until its stdout closes, then fails the calls still waiting with
/// its exit.
async fn read_frames<R: AsyncBufRead + Unpin>(
    shared: Arc<Shared>,
    mut stdout: R,
    exit: oneshot::Receiver<std::io::Result<ExitStatus>>,
    stderr_done: tokio::task::JoinHandle<()>,
) {
    let broken = loop {
        match read_line(&mut stdout, MAX_FRAME).await {
            Ok(Line::Full(line)) => match serde_json::from_slice::<WorkerMessage>(&line) {
                Ok(message) => handle(&shared, message),
                Err(error) => {
                    break Some(format!(
                        "the worker sent a frame that is not the protocol ({error}): {}",
                        preview(&line)
                    ));
                }
            },
            Ok(Line::TooLong) => {
                break Some(format!(
                    "the worker sent a frame over {} MiB",
                    MAX_FRAME >> 20
                ));
            }
            Ok(Line::End) => break None,
            Err(error) => break Some(format!("reading the worker's frames failed: {error}")),
        }
    };
    if let Some(reason) = &broken {
        tracing::warn!(target: TARGET, tool = %shared.tool, %reason, "killing a broken worker");
        shared.kill_group();
    }
    // Its stdout closed: the process is ending (or closed it and is killed here).
    let status = match tokio::time::timeout(Duration::from_secs(5), exit_status(exit)).await {
        Ok(status) => status,
        Err(_) => {
            shared.kill_group();
            None
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), stderr_done).await;
    let reason = broken.unwrap_or_else(|| exit_reason(&status, shared.last_stderr_line()));
    tracing::info!(target: TARGET, tool = %shared.tool, %reason, "a tool worker ended");
    shared.end(reason);
}

async fn exit_status(exit: oneshot::Receiver<std::io::Result<ExitStatus>>) -> Option<ExitStatus> {
    exit.await.ok().and_then(Result::ok)
}

/// "the worker exited with status 3: <its last stderr line>".
fn exit_reason(status: &Option<ExitStatus>, last_line: Option<String>) -> String {
    use std::os::unix::process::ExitStatusExt;
    let how = match status {
        Some(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("the worker exited with status {code}"),
            (None, Some(signal)) => format!("the worker was killed by signal {signal}"),
            (None, None) => "the worker exited".to_owned(),
        },
        None => "the worker exited".to_owned(),
    };
    match last_line {
        Some(line) => format!("{how}: {line}"),
        None => how,
    }
}

/// One frame from the worker.
fn handle(shared: &Shared, message: WorkerMessage) {
    let tool = shared.tool.as_str();
    match message {
        WorkerMessage::Result { id, value } => {
            let call = shared.pending.lock().expect("pending lock").remove(&id);
            match call {
                Some(call) => {
                    let _ = call.answer.send(Ok(Invoked {
                        value,
                        attachments: call.attachments,
                    }));
                }
                None => {
                    tracing::debug!(target: TARGET, tool, %id, "a result for a call no one waits for")
                }
            }
        }
        WorkerMessage::Error { id, error } => {
            let call = shared.pending.lock().expect("pending lock").remove(&id);
            if let Some(call) = call {
                let _ = call.answer.send(Err(CallFailure::Worker(error)));
            }
        }
        WorkerMessage::Log { id, level, message } => {
            let call_id = id.map(|id| id.to_string()).unwrap_or_default();
            // The plugin's words, so one frame is one line of the log, whatever it holds.
            let message = escape_controls(&message);
            match level {
                LogLevel::Debug => tracing::debug!(target: TARGET, tool, call_id, "{message}"),
                LogLevel::Info => tracing::info!(target: TARGET, tool, call_id, "{message}"),
                LogLevel::Warning => tracing::warn!(target: TARGET, tool, call_id, "{message}"),
                LogLevel::Error => tracing::error!(target: TARGET, tool, call_id, "{message}"),
            }
        }
        WorkerMessage::Attachment {
            id,
            name,
            mime,
            data,
        } => attach(shared, id, name, mime, &data),
        WorkerMessage::Ready { .. } => {
            tracing::warn!(target: TARGET, tool, "the worker said ready again; ignored");
        }
    }
}

/// Adds a file to its call; a call whose files exceed [`MAX_ATTACHMENTS`] fails.
fn attach(shared: &Shared, id: Uuid, name: String, mime: String, data: &str) {
    let mut pending = shared.pending.lock().expect("pending lock");
    let Some(call) = pending.get_mut(&id) else {
        return;
    };
    let refused = match base64::engine::general_purpose::STANDARD.decode(data) {
        Err(error) => Some(format!("the attachment {name:?} is not base64: {error}")),
        Ok(bytes) if call.attachment_bytes + bytes.len() > MAX_ATTACHMENTS => Some(format!(
            "the call's attachments exceed {} MiB: save smaller files",
            MAX_ATTACHMENTS >> 20
        )),
        Ok(bytes) => {
            call.attachment_bytes += bytes.len();
            call.attachments.push(NewAttachment { name, mime, bytes });
            None
        }
    };
    if let Some(reason) = refused
        && let Some(call) = pending.remove(&id)
    {
        let _ = call.answer.send(Err(CallFailure::Attachments(reason)));
    }
}

/// The worker's stderr, line by line (control characters escaped), to the log; the last lines
/// kept to explain an exit. A line over [`MAX_STDERR_LINE`] is replaced by a note saying so.
async fn log_stderr(shared: Arc<Shared>, stderr: tokio::process::ChildStderr) {
    let mut stderr = BufReader::new(stderr);
    loop {
        let line = match read_line(&mut stderr, MAX_STDERR_LINE).await {
            Ok(Line::Full(line)) => escape_controls(String::from_utf8_lossy(&line).trim_end()),
            Ok(Line::TooLong) => "(a line over 4 KiB, not shown)".to_owned(),
            Ok(Line::End) | Err(_) => return,
        };
        if line.trim().is_empty() {
            continue;
        }
        tracing::info!(target: TARGET, tool = %shared.tool, "{line}");
        let mut tail = shared.stderr_tail.lock().expect("stderr lock");
        if tail.len() == STDERR_TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

enum Line {
    Full(Vec<u8>),
    /// Longer than allowed (consumed up to its end).
    TooLong,
    End,
}

/// One line (without its newline), at most `max` bytes; a longer one is read to its end and
/// reported as [`Line::TooLong`]. A last line without a newline counts.
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R, max: usize) -> std::io::Result<Line> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            return Ok(match (too_long, line.is_empty()) {
                (true, _) => Line::TooLong,
                (false, true) => Line::End,
                (false, false) => Line::Full(line),
            });
        }
        let (chunk, used, done) = match buffer.iter().position(|&b| b == b'\n') {
            Some(at) => (&buffer[..at], at + 1, true),
            None => (buffer, buffer.len(), false),
        };
        if !too_long {
            if line.len() + chunk.len() > max {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        reader.consume(used);
        if done {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Full(line)
            });
        }
    }
}

/// The start of a frame, for a message (control characters escaped).
fn preview(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let mut preview: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        preview.push('…');
    }
    escape_controls(&preview)
}

/// `text` with its control characters escaped (`\n`, `\r`, `\t`, the rest as `\u{1b}`), line
/// and paragraph separators too: what a worker says fits on one line of the server's log and
/// cannot forge another line or send terminal sequences.
pub fn escape_controls(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                escaped.extend(c.escape_unicode());
            }
            c => escaped.push(c),
        }
    }
    escaped
}

/// Runs `command` with `--describe`: its `ready` frame's methods, or why not (the last line of
/// its stderr).
pub async fn describe(mut command: Command) -> Result<Vec<MethodInfo>, DescribeError> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().map_err(DescribeError::Spawn)?;
    let pid = child.id().and_then(|p| i32::try_from(p).ok());
    let output = match tokio::time::timeout(DESCRIBE_TIMEOUT, child.wait_with_output()).await {
        Ok(output) => output.map_err(DescribeError::Spawn)?,
        Err(_) => {
            if let Some(pid) = pid {
                // SAFETY: plain signal delivery to the description's own process group.
                unsafe { libc::killpg(pid, libc::SIGKILL) };
            }
            return Err(DescribeError::Timeout);
        }
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(escape_controls);
    if !output.status.success() {
        let how = exit_reason(&Some(output.status), None);
        return Err(DescribeError::Failed(match last {
            Some(last) => last,
            None => format!("describing the tool failed: {how}"),
        }));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
    match serde_json::from_str::<WorkerMessage>(line) {
        Ok(WorkerMessage::Ready { protocol, methods }) if protocol == WORKER_PROTOCOL => {
            Ok(methods)
        }
        Ok(WorkerMessage::Ready { protocol, .. }) => Err(DescribeError::Protocol(protocol)),
        Ok(
            WorkerMessage::Result { .. }
            | WorkerMessage::Error { .. }
            | WorkerMessage::Log { .. }
            | WorkerMessage::Attachment { .. },
        )
        | Err(_) => Err(DescribeError::NotAReadyFrame(preview(line.as_bytes()))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests stop at the first surprise

    use super::*;

    async fn lines(input: &[u8], max: usize) -> Vec<String> {
        let mut reader = BufReader::with_capacity(4, input);
        let mut out = Vec::new();
        loop {
            match read_line(&mut reader, max).await.unwrap() {
                Line::Full(line) => out.push(String::from_utf8(line).unwrap()),
                Line::TooLong => out.push("<too long>".into()),
                Line::End => return out,
            }
        }
    }

    #[tokio::test]
    async fn lines_are_split_and_capped() {
        assert_eq!(
            lines(b"ab\ncdef\n\nxyz", 10).await,
            ["ab", "cdef", "", "xyz"]
        );
        assert_eq!(
            lines(b"0123456789abc\nok\n", 10).await,
            ["<too long>", "ok"]
        );
        assert_eq!(lines(b"0123456789abc", 10).await, ["<too long>"]);
        assert!(lines(b"", 10).await.is_empty());
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            escape_controls("one\nINFO forged line\r\tand \u{1b}[31mred\u{2028}"),
            "one\\nINFO forged line\\r\\tand \\u{1b}[31mred\\u{2028}"
        );
        assert_eq!(escape_controls("plain — text"), "plain — text");
    }

    #[test]
    fn exit_reasons_name_the_status_and_the_last_line() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            exit_reason(&Some(ExitStatus::from_raw(3 << 8)), Some("boom".into())),
            "the worker exited with status 3: boom"
        );
        assert_eq!(
            exit_reason(&Some(ExitStatus::from_raw(9)), None),
            "the worker was killed by signal 9"
        );
    }
}
