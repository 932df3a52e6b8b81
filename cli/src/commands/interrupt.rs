//! `centaur interrupt`: stopping a thread's running or queued turn, and with `--all` its queue.

use std::process::ExitCode;

use centaur_client::Client;
use centaur_client::sanitize::{Colours, clean};
use centaur_protocol::ThreadKey;

use crate::error::CliError;

pub async fn interrupt(client: &Client, key: &ThreadKey, all: bool) -> Result<ExitCode, CliError> {
    let answer = client.interrupt_thread(key, all).await?;
    let key = clean(key.as_str(), Colours::Drop);
    match answer.execution_id {
        Some(execution_id) if answer.interrupted => {
            println!("interrupted execution {execution_id} on {key}");
        }
        Some(_) | None => println!("nothing running on {key}"),
    }
    if all {
        let n = answer.withdrawn_messages;
        let s = if n == 1 { "" } else { "s" };
        println!("withdrew {n} waiting message{s}");
    }
    Ok(ExitCode::SUCCESS)
}
