//! `shell`: each user message runs in bash in the workspace. Output streams as
//! `command.output`; the execution's result is the output, with a non-zero exit status said
//! at its end. A command that exits non-zero (or dies by a signal) fails the turn, and the
//! turn's later messages are not run: the output ends with a line that names them.

use std::collections::HashSet;
use std::process::Stdio;

use async_trait::async_trait;
use centaur_protocol::runner::{ApprovalPolicy, Finish};
use centaur_protocol::{ApprovalKind, ApprovalResolution, EventBody};
use tokio::io::AsyncReadExt;

use super::Harness;
use crate::turn::Turn;

/// The shell harness, for the life of its sandbox.
#[derive(Default)]
pub struct Shell {
    /// Commands a person approved for the session (kind and text): the same command runs
    /// again in this sandbox without asking.
    approved_for_session: HashSet<(&'static str, String)>,
}

/// The result text keeps at most this much output (the events carry all of it).
const MAX_RESULT_BYTES: usize = 256 * 1024;

#[async_trait]
impl Harness for Shell {
    async fn turn(&mut self, turn: &mut Turn) -> Finish {
        let mut result = String::new();
        let commands: Vec<String> = turn.input.iter().map(|m| m.text.clone()).collect();
        for (index, command) in commands.iter().cloned().enumerate() {
            let later = &commands[index + 1..];
            let remembered = (ApprovalKind::Command.as_str(), command.clone());
            if turn.sandbox.approval_policy == ApprovalPolicy::Always
                && !self.approved_for_session.contains(&remembered)
            {
                let verdict = turn
                    .approval(
                        ApprovalKind::Command,
                        format!("run `{}`", first_line(&command)),
                        serde_json::json!({"command": command, "cwd": turn.sandbox.workspace}),
                    )
                    .await;
                if matches!(verdict, ApprovalResolution::ApproveForSession) {
                    self.approved_for_session.insert(remembered);
                }
                if !crate::turn::approved(verdict) {
                    return if turn.cancelled.is_cancelled() {
                        Finish::Cancelled {
                            reason: "interrupted".into(),
                        }
                    } else {
                        Finish::Completed {
                            result_text: format!(
                                "{}the command was not approved: {command}{}",
                                shortened(result),
                                not_run(later)
                                    .map(|line| format!("\n{line}"))
                                    .unwrap_or_default()
                            ),
                        }
                    };
                }
            }
            let command_id = format!("{}-{index}", turn.execution_id.simple());
            match run(turn, &command_id, &command).await {
                Ok((output, code)) => {
                    result.push_str(&output);
                    if code != Some(0) {
                        // Cut first: what follows says how the turn ended, whatever the output's
                        // length.
                        let mut result = shortened(result);
                        if !result.is_empty() && !result.ends_with('\n') {
                            result.push('\n');
                        }
                        let (said, error) = match code {
                            Some(code) => (
                                format!("[exit status {code}]\n"),
                                format!("exited with status {code}"),
                            ),
                            None => (
                                "[killed by a signal]\n".to_owned(),
                                "was killed by a signal".to_owned(),
                            ),
                        };
                        result.push_str(&said);
                        // The turn stops here: its later messages are not run, as it says.
                        if let Some(line) = not_run(later) {
                            result.push_str(&line);
                            result.push('\n');
                        }
                        return Finish::Failed {
                            error: format!("`{}` {error}", first_line(&command)),
                            output: Some(result),
                        };
                    }
                }
                Err(Stop::Cancelled) => {
                    return Finish::Cancelled {
                        reason: "interrupted".into(),
                    };
                }
                Err(Stop::Failed(error)) => {
                    return Finish::Failed {
                        error,
                        output: None,
                    };
                }
            }
        }
        Finish::Completed {
            result_text: shortened(result),
        }
    }
}

/// The result text, cut to [`MAX_RESULT_BYTES`] with a note when longer.
fn shortened(mut result: String) -> String {
    if result.len() > MAX_RESULT_BYTES {
        let mut cut = MAX_RESULT_BYTES;
        while !result.is_char_boundary(cut) {
            cut -= 1;
        }
        result.truncate(cut);
        result.push_str("\n[output truncated]\n");
    }
    result
}

enum Stop {
    Cancelled,
    Failed(String),
}

/// The line that says which of the turn's messages were not run, once a command stopped it:
/// `[2 later messages not run: `make`, `make test`]` (each by its first line, cut at 80
/// characters). `None` when it was the last.
fn not_run(later: &[String]) -> Option<String> {
    if later.is_empty() {
        return None;
    }
    let named: Vec<String> = later
        .iter()
        .map(|command| {
            let line = first_line(command);
            match line.char_indices().nth(80) {
                Some((cut, _)) => format!("`{}…`", &line[..cut]),
                None => format!("`{line}`"),
            }
        })
        .collect();
    let count = match later.len() {
        1 => "1 later message".to_owned(),
        n => format!("{n} later messages"),
    };
    Some(format!("[{count} not run: {}]", named.join(", ")))
}

fn first_line(command: &str) -> &str {
    command.lines().next().unwrap_or("")
}

/// Runs `command` with bash in the workspace; streams its combined output.
async fn run(turn: &Turn, command_id: &str, command: &str) -> Result<(String, Option<i32>), Stop> {
    turn.emit(EventBody::CommandStarted {
        command_id: command_id.to_owned(),
        command: command.to_owned(),
    });
    let (reader, writer) = std::io::pipe().map_err(|e| Stop::Failed(format!("no pipe: {e}")))?;
    let mut child = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(command)
        .current_dir(&turn.sandbox.workspace)
        .envs(&turn.sandbox.env)
        .stdin(Stdio::null())
        .stdout(
            writer
                .try_clone()
                .map_err(|e| Stop::Failed(e.to_string()))?,
        )
        .stderr(writer)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Stop::Failed(format!("cannot start bash: {e}")))?;
    // The runner waits for it; an early end of the turn kills it with the rest of its tree.
    let _owned = crate::tree::own(child.id(), crate::tree::Lifetime::Turn);
    let mut output = tokio::net::unix::pipe::Receiver::from_owned_fd(reader.into())
        .map_err(|e| Stop::Failed(e.to_string()))?;
    let mut out = Output {
        command_id,
        all: Vec::new(),
        pending: Vec::new(),
        streamed: 0,
    };
    let mut buf = vec![0u8; 16 * 1024];
    let mut open = true;
    let status = loop {
        tokio::select! {
            _ = turn.cancelled.cancelled() => {
                if let Some(pid) = child.id() {
                    // SAFETY: signals the command's own process group.
                    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
                }
                let _ = child.wait().await;
                out.flush(turn);
                turn.emit(EventBody::CommandFinished { command_id: command_id.to_owned(), exit_code: None });
                return Err(Stop::Cancelled);
            }
            status = child.wait() => {
                // What is still in the pipe, for half a second at most: a background process
                // that keeps it open (or keeps writing) does not hold the turn.
                let drained_by = tokio::time::Instant::now() + std::time::Duration::from_millis(500);
                while let Ok(Ok(n)) = tokio::time::timeout_at(drained_by, output.read(&mut buf)).await {
                    if n == 0 || turn.cancelled.is_cancelled() {
                        break;
                    }
                    out.push(turn, &buf[..n]);
                }
                break status.map_err(|e| Stop::Failed(e.to_string()))?;
            }
            read = output.read(&mut buf), if open => match read {
                Ok(0) | Err(_) => open = false,
                Ok(n) => out.push(turn, &buf[..n]),
            },
        }
    };
    out.flush(turn);
    let exit_code = status.code();
    turn.emit(EventBody::CommandFinished {
        command_id: command_id.to_owned(),
        exit_code,
    });
    Ok((String::from_utf8_lossy(&out.all).into_owned(), exit_code))
}

/// Output streamed per command; beyond it, the rest is counted, not sent.
const MAX_STREAMED_BYTES: usize = 16 * 1024 * 1024;

/// A command's output on its way to `command.output` events, in whole UTF-8 characters. The
/// result keeps the first MAX_RESULT_BYTES.
struct Output<'a> {
    command_id: &'a str,
    all: Vec<u8>,
    pending: Vec<u8>,
    streamed: usize,
}

impl Output<'_> {
    fn push(&mut self, turn: &Turn, bytes: &[u8]) {
        let room = (MAX_RESULT_BYTES + 4).saturating_sub(self.all.len());
        self.all.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if self.streamed >= MAX_STREAMED_BYTES {
            return;
        }
        self.streamed += bytes.len();
        if self.streamed >= MAX_STREAMED_BYTES {
            self.pending.extend_from_slice(bytes);
            self.flush(turn);
            turn.emit(EventBody::CommandOutput {
                command_id: self.command_id.to_owned(),
                chunk: format!(
                    "\n[output past {} MiB not streamed]\n",
                    MAX_STREAMED_BYTES >> 20
                ),
                at: None,
            });
            return;
        }
        self.pending.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.pending.len(),
        };
        if valid > 0 {
            let chunk = String::from_utf8_lossy(&self.pending[..valid]).into_owned();
            self.pending.drain(..valid);
            turn.emit(EventBody::CommandOutput {
                command_id: self.command_id.to_owned(),
                chunk,
                at: None,
            });
        }
    }

    fn flush(&mut self, turn: &Turn) {
        if !self.pending.is_empty() {
            turn.emit(EventBody::CommandOutput {
                command_id: self.command_id.to_owned(),
                chunk: String::from_utf8_lossy(&self.pending).into_owned(),
                at: None,
            });
            self.pending.clear();
        }
    }
}
