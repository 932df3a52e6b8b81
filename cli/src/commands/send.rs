//! `centaur send`: one turn from a script. The thread key once the server accepted the turn,
//! then the answer (or every event as JSON); approvals the turn waits for on stderr, with the
//! command that decides them; exit 1 when the turn fails or is cancelled.

use std::io::Write;
use std::process::ExitCode;

use centaur_client::Client;
use centaur_client::render;
use centaur_client::sanitize::{Colours, clean, json_line};
use centaur_protocol::runner::ApprovalPolicy;
use centaur_protocol::{EventBody, Harness, ThreadKey};

use super::parse_key;
use crate::error::CliError;

/// What `centaur send` was asked.
pub struct Turn {
    /// Resolved already ([`super::resolve_thread`]).
    pub thread_key: Option<ThreadKey>,
    pub harness: Option<Harness>,
    pub message: String,
    pub max_duration_ms: Option<u64>,
    pub approval_policy: Option<ApprovalPolicy>,
    /// Every event as one JSON line instead of the answer.
    pub json: bool,
}

pub async fn send(client: &Client, turn: Turn) -> Result<ExitCode, CliError> {
    let key = match turn.thread_key {
        Some(key) => key,
        None => parse_key(&format!("cli:{}", uuid::Uuid::new_v4()))?,
    };
    // A refused turn (an unavailable harness, a turn already running) prints no key: a script
    // must not go on with a thread that has nothing of its own.
    let execution_id = client
        .execute(
            &key,
            turn.harness,
            &turn.message,
            turn.max_duration_ms,
            turn.approval_policy,
        )
        .await?;
    println!("thread_key={key}");
    let _ = std::io::stdout().flush();
    let json = turn.json;
    let mut outcome = ExitCode::from(1);
    let colours = Colours::for_stdout();
    client
        .follow(&key, 0, Some(execution_id), |event| {
            if json {
                println!("{}", json_line(event).expect("serializable"));
            }
            match &event.body {
                EventBody::ExecutionCompleted { result_text } => {
                    if !json {
                        print_answer(result_text, colours);
                    }
                    outcome = ExitCode::SUCCESS;
                    false
                }
                EventBody::ExecutionFailed { error, output } => {
                    // What the turn produced before it failed (a command's output) is part of
                    // the answer: a script sees it where the answer would be.
                    if let Some(output) = output.as_deref().filter(|o| !o.is_empty())
                        && !json
                    {
                        print_answer(output, colours);
                    }
                    eprintln!("centaur: the turn failed: {}", clean(error, Colours::Drop));
                    false
                }
                EventBody::ExecutionCancelled { reason } => {
                    eprintln!(
                        "centaur: the turn was cancelled: {}",
                        clean(reason, Colours::Drop)
                    );
                    false
                }
                // The turn waits for someone to decide: say how, as `attach` does, and wait.
                EventBody::ApprovalRequested {
                    approval_id,
                    summary,
                    ..
                } => {
                    let _ = std::io::stdout().flush();
                    eprintln!(
                        "{}",
                        render::approval_request(
                            &event.thread_key,
                            *approval_id,
                            summary,
                            Colours::Drop
                        )
                    );
                    true
                }
                EventBody::ThreadCreated { .. }
                | EventBody::MessageCreated { .. }
                | EventBody::SandboxAssigned { .. }
                | EventBody::SandboxReleased { .. }
                | EventBody::ExecutionQueued { .. }
                | EventBody::ExecutionStarted { .. }
                | EventBody::AgentMessageDelta { .. }
                | EventBody::AgentMessage { .. }
                | EventBody::AgentReasoning { .. }
                | EventBody::CommandStarted { .. }
                | EventBody::CommandOutput { .. }
                | EventBody::CommandFinished { .. }
                | EventBody::FileChanged { .. }
                | EventBody::ToolCallStarted { .. }
                | EventBody::ToolCallFinished { .. }
                | EventBody::ApprovalResolved { .. }
                | EventBody::EgressDenied { .. }
                | EventBody::Usage { .. } => true,
            }
        })
        .await?;
    Ok(outcome)
}

/// The turn's text on stdout, safe to print, ending with a line break.
fn print_answer(text: &str, colours: Colours) {
    let text = clean(text, colours);
    print!("{text}");
    if !text.trim_end_matches("\x1b[0m").ends_with('\n') {
        println!();
    }
}
