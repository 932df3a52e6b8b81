//! `centaur attach`: following a thread's events as lines for people, or as JSON lines.

use std::io::Write;
use std::process::ExitCode;

use centaur_client::Client;
use centaur_client::render;
use centaur_client::sanitize::{Colours, json_line};
use centaur_protocol::{Event, EventBody, ThreadKey};

use crate::error::CliError;

pub async fn attach(
    client: &Client,
    key: &ThreadKey,
    after_event_id: i64,
    all_events: bool,
    exit_on_terminal: bool,
) -> Result<ExitCode, CliError> {
    let mut outcome = ExitCode::SUCCESS;
    let mut renderer = render::Lines::new(Colours::for_stdout());
    // "The next execution": the thread's latest one (running or just ended), or a later one;
    // not an older turn replayed from the start.
    let (latest_execution, last_event_id) = if exit_on_terminal {
        client.latest(key).await?
    } else {
        (None, 0)
    };
    client
        .follow(key, after_event_id, None, |event: &Event| {
            let mut out = std::io::stdout().lock();
            if all_events {
                let _ = writeln!(out, "{}", json_line(event).expect("serializable"));
            } else if let Some(text) = renderer.render(event) {
                let _ = out.write_all(text.as_bytes());
            }
            let _ = out.flush();
            let current = event.event_id > last_event_id
                || (latest_execution.is_some() && event.execution_id == latest_execution);
            if event.body.is_terminal() && exit_on_terminal && current {
                if !matches!(event.body, EventBody::ExecutionCompleted { .. }) {
                    outcome = ExitCode::from(1);
                }
                return false;
            }
            true
        })
        .await?;
    Ok(outcome)
}
