//! `centaur audit`: the egress proxy's audit as lines (or JSON), once or followed.

use std::io::Write;
use std::time::Duration;

use centaur_protocol::api::EgressAuditEntry;

use crate::api::{AuditQuery, Client, Failure};
use crate::render;
use crate::sanitize::{Colours, clean, json_line};

/// How often `--follow` asks for new records.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// How long `--follow` waits out a server that went away before giving up.
const AWAY_AT_MOST: Duration = Duration::from_secs(10);

/// Why `centaur audit` stopped.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Server(#[from] Failure),
    #[error(
        "lost the Centaur server at {url} while following the audit ({reason}); resume with `{resume}` once it is back"
    )]
    Lost {
        url: String,
        reason: String,
        /// The command that carries on where this one stopped.
        resume: String,
    },
}

impl AuditError {
    pub fn exit_code(&self) -> u8 {
        match self {
            AuditError::Server(failure) => failure.exit_code(),
            AuditError::Lost { .. } => 3,
        }
    }
}

/// The `centaur audit` that carries on where `query` stopped: its filters, and its cursor
/// when it has one (nothing printed yet, nothing to skip).
fn resume_command(query: &AuditQuery) -> String {
    let mut command = String::from("centaur audit --follow");
    if let Some(thread_key) = &query.thread_key {
        command.push_str(&format!(" --thread {thread_key}"));
    }
    if query.denied {
        command.push_str(" --denied");
    }
    if let Some(after) = query.after {
        command.push_str(&format!(" --after {after}"));
    }
    command
}

/// Prints the records `query` asks for, then with `follow` every new one as it is stored, until
/// the server is gone for longer than [`AWAY_AT_MOST`].
pub async fn print(
    client: &Client,
    mut query: AuditQuery,
    follow: bool,
    json: bool,
) -> Result<(), AuditError> {
    let mut away_since: Option<tokio::time::Instant> = None;
    loop {
        let page = match client.egress_audit(&query).await {
            Ok(page) => {
                if away_since.take().is_some() {
                    eprintln!("centaur: reconnected");
                }
                page
            }
            Err(failure @ (Failure::Unreachable { .. } | Failure::DatabaseUnavailable { .. }))
                if follow =>
            {
                let since = *away_since.get_or_insert_with(|| {
                    eprintln!(
                        "centaur: the server at {} went away; retrying…",
                        client.url()
                    );
                    tokio::time::Instant::now()
                });
                if since.elapsed() >= AWAY_AT_MOST {
                    return Err(AuditError::Lost {
                        url: client.url().to_owned(),
                        reason: failure.to_string(),
                        resume: resume_command(&query),
                    });
                }
                tokio::time::sleep(POLL_EVERY).await;
                continue;
            }
            Err(failure) => return Err(failure.into()),
        };
        let full = page.records.len() >= query.limit as usize;
        {
            let mut out = std::io::stdout().lock();
            for entry in &page.records {
                let text = if json {
                    json_line(entry).expect("an audit record serializes")
                } else {
                    line(entry)
                };
                let _ = writeln!(out, "{text}");
            }
            let _ = out.flush();
        }
        if !follow {
            return Ok(());
        }
        query.after = Some(page.next_after);
        // A full page: more may be waiting already.
        if !full {
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

/// One record as one line: when, the decision, the request, its status, then the thread,
/// the execution, the secrets swapped, the placeholders the body carried (names) and the
/// reason, where there are some. What the
/// sandbox chose (host, path, method, reason) is cleaned of control sequences.
pub fn line(entry: &EgressAuditEntry) -> String {
    let status = entry
        .status
        .map_or_else(|| "-".to_owned(), |s| s.to_string());
    let mut line = format!(
        "{}  {:<14} {:<7} {}:{}{} {status}",
        render::timestamp(entry.at),
        entry.decision.as_str(),
        clean(&entry.method, Colours::Drop),
        clean(&entry.host, Colours::Drop),
        entry.port,
        clean(&entry.path, Colours::Drop),
    );
    if let Some(key) = &entry.thread_key {
        line.push_str(&format!("  thread={}", clean(key, Colours::Drop)));
    }
    if let Some(execution_id) = entry.execution_id {
        line.push_str(&format!("  execution={execution_id}"));
    }
    if !entry.secrets.is_empty() {
        line.push_str(&format!("  secrets={}", entry.secrets.join(",")));
    }
    if !entry.body_placeholders.is_empty() {
        line.push_str(&format!(
            "  body_placeholders={}",
            entry.body_placeholders.join(",")
        ));
    }
    if entry.body_unknown_placeholders > 0 {
        line.push_str(&format!(
            "  unknown_placeholders={}",
            entry.body_unknown_placeholders
        ));
    }
    if let Some(reason) = &entry.reason {
        line.push_str(&format!("  — {}", clean(reason, Colours::Drop)));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The way back keeps the filters, and a cursor only once there is one.
    #[test]
    fn the_resume_command_keeps_the_filters_and_the_cursor() {
        let mut query = AuditQuery {
            thread_key: Some(centaur_protocol::ThreadKey::parse("api:x").unwrap()),
            denied: true,
            after: None,
            limit: 100,
        };
        assert_eq!(
            resume_command(&query),
            "centaur audit --follow --thread api:x --denied"
        );
        query.after = Some(42);
        query.thread_key = None;
        query.denied = false;
        assert_eq!(resume_command(&query), "centaur audit --follow --after 42");
    }
}
