//! `centaur threads`: the most recently active threads as a table for people (title, harness,
//! status with the approvals waiting, how long ago), fitted to the terminal; a Slack thread's
//! title starts with its channel and who started it; `--json` is the API's answer as it is.

use std::io::IsTerminal;
use std::process::ExitCode;

use centaur_client::Client;
use centaur_client::render::{self, ago, clip};
use centaur_client::sanitize::{Colours, clean, json_line};
use centaur_protocol::api::ThreadSummary;
use chrono::{DateTime, Utc};
use unicode_width::UnicodeWidthStr;

use crate::error::CliError;

pub async fn threads(client: &Client, json: bool) -> Result<ExitCode, CliError> {
    let list = client.threads().await?;
    if json {
        println!("{}", json_line(&list).expect("serializable"));
        return Ok(ExitCode::SUCCESS);
    }
    if list.threads.is_empty() {
        println!("no threads yet: start one with `centaur send --message ...`");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Row> = list
        .threads
        .iter()
        .map(|thread| Row::of(thread, Utc::now()))
        .collect();
    print!("{}", table(&rows, terminal_width()));
    Ok(ExitCode::SUCCESS)
}

/// One thread as the table shows it, every cell safe to print.
struct Row {
    title: String,
    harness: String,
    status: String,
    active: String,
    key: String,
}

impl Row {
    fn of(thread: &ThreadSummary, now: DateTime<Utc>) -> Row {
        let key = clean(thread.thread_key.as_str(), Colours::Drop);
        let title = thread
            .title
            .as_deref()
            .map(|t| clean(t, Colours::Drop).replace(['\n', '\t'], " "))
            .filter(|t| !t.trim().is_empty())
            .unwrap_or_else(|| key.clone());
        // A Slack thread says where it lives and who started it, first: a long title is cut.
        let title = match &thread.slack {
            Some(origin) => format!("{} · {title}", render::slack_origin(origin)),
            None => title,
        };
        let mut status = render::thread_status(thread.status).to_owned();
        match thread.waiting_approvals {
            0 => {}
            1 => status.push_str(" · 1 approval waits"),
            n => status.push_str(&format!(" · {n} approvals wait")),
        }
        Row {
            title,
            harness: thread.harness.as_str().to_owned(),
            status,
            active: ago(now, thread.last_activity_at),
            key,
        }
    }
}

const HEADER: [&str; 5] = ["TITLE", "HARNESS", "STATUS", "ACTIVE", "THREAD KEY"];
/// A title longer than this is cut even on a wide terminal, so the columns stay together.
const TITLE_MAX: usize = 50;
/// What is kept of a key on a narrow terminal (`cli:0196f1c2…`): enough to tell threads apart.
const KEY_MIN: usize = 13;
const TITLE_MIN: usize = 16;

/// The rows under a header, in columns that fit `width` when it is known: the key is shortened
/// first, then the title.
fn table(rows: &[Row], width: Option<usize>) -> String {
    let widest = |cell: fn(&Row) -> &str, header: &str| {
        rows.iter()
            .map(|r| columns(cell(r)))
            .chain([columns(header)])
            .max()
            .unwrap_or(0)
    };
    let mut title = widest(|r| &r.title, HEADER[0]).min(TITLE_MAX);
    let harness = widest(|r| &r.harness, HEADER[1]);
    let status = widest(|r| &r.status, HEADER[2]);
    let active = widest(|r| &r.active, HEADER[3]);
    let mut key = widest(|r| &r.key, HEADER[4]);
    if let Some(width) = width {
        // Two spaces between columns.
        let fixed = harness + status + active + 4 * 2;
        let over = (fixed + title + key).saturating_sub(width);
        let from_key = over.min(key.saturating_sub(KEY_MIN));
        key -= from_key;
        title -= (over - from_key).min(title.saturating_sub(TITLE_MIN));
    }
    let line = |cells: [&str; 5]| {
        let line = format!(
            "{}  {}  {}  {}  {}",
            padded(&clip(cells[0], title), title),
            padded(cells[1], harness),
            padded(cells[2], status),
            padded(cells[3], active),
            clip(cells[4], key),
        );
        format!("{}\n", line.trim_end())
    };
    let mut out = line(HEADER);
    for row in rows {
        out.push_str(&line([
            &row.title,
            &row.harness,
            &row.status,
            &row.active,
            &row.key,
        ]));
    }
    out
}

/// How many terminal columns `text` takes (a CJK character or an emoji takes two).
fn columns(text: &str) -> usize {
    text.width()
}

/// `text` padded with spaces to `width` columns (`format!`'s padding counts characters).
pub(crate) fn padded(text: &str, width: usize) -> String {
    format!("{text}{}", " ".repeat(width.saturating_sub(columns(text))))
}

/// The terminal's width when stdout is one, else `COLUMNS` when set; unknown otherwise (a pipe
/// gets whole lines).
pub(crate) fn terminal_width() -> Option<usize> {
    // crossterm asks the controlling terminal, which a pipe into `less` still has: only a
    // terminal on stdout is measured.
    if std::io::stdout().is_terminal()
        && let Ok((columns, _)) = ratatui::crossterm::terminal::size()
        && columns > 0
    {
        return Some(usize::from(columns));
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .filter(|c| *c > 0)
}

#[cfg(test)]
mod tests {
    use centaur_protocol::api::ThreadStatus;
    use centaur_protocol::{Harness, ThreadKey};

    use super::*;

    fn thread(key: &str, title: Option<&str>, status: ThreadStatus, waiting: u32) -> ThreadSummary {
        let at: DateTime<Utc> = "2026-11-22T10:00:00Z".parse().unwrap();
        ThreadSummary {
            thread_key: ThreadKey::parse(key).unwrap(),
            platform: "cli".into(),
            harness: Harness::Shell,
            persona: None,
            status,
            title: title.map(str::to_owned),
            waiting_approvals: waiting,
            slack: None,
            created_at: at,
            last_activity_at: at,
            last_event_id: 7,
        }
    }

    fn rows() -> Vec<Row> {
        let now: DateTime<Utc> = "2026-11-22T10:03:10Z".parse().unwrap();
        [
            thread(
                "cli:0196f1c2-7d0e-7c39-9d43-1f0f6b0f9a11",
                Some("echo x; exit 3"),
                ThreadStatus::Failed,
                0,
            ),
            thread(
                "api:nightly",
                Some("run the tests and fix what fails"),
                ThreadStatus::Running,
                2,
            ),
            thread("api:cjk", Some("修复登录页面的测试"), ThreadStatus::Idle, 0),
            thread("api:empty", None, ThreadStatus::Idle, 0),
        ]
        .iter()
        .map(|t| Row::of(t, now))
        .collect()
    }

    /// A header, the title (the key without one), failed and waiting threads told apart,
    /// times as the TUI says them, columns aligned in terminal columns (a CJK character takes
    /// two).
    #[test]
    fn a_table_with_titles_statuses_badges_and_relative_times() {
        assert_eq!(
            table(&rows(), None),
            "\
TITLE                             HARNESS  STATUS                      ACTIVE  THREAD KEY
echo x; exit 3                    shell    failed                      3m ago  cli:0196f1c2-7d0e-7c39-9d43-1f0f6b0f9a11
run the tests and fix what fails  shell    running · 2 approvals wait  3m ago  api:nightly
修复登录页面的测试                shell    idle                        3m ago  api:cjk
api:empty                         shell    idle                        3m ago  api:empty
"
        );
    }

    /// A Slack thread's title says its channel (or DM) and who started it, from names that
    /// are one line and safe to print whatever Slack holds.
    #[test]
    fn slack_threads_say_their_channel_and_who_started_them() {
        use centaur_protocol::slack::{SlackOrigin, SlackUser};
        let now: DateTime<Utc> = "2026-11-22T10:03:10Z".parse().unwrap();
        let origin = |channel: &str, name: Option<&str>, who: Option<&str>| SlackOrigin {
            team_id: "T1".into(),
            channel_id: channel.into(),
            channel_name: name.map(str::to_owned),
            thread_ts: "1700000000.000100".into(),
            started_by: SlackUser {
                id: "U1".into(),
                name: who.map(str::to_owned),
            },
        };
        let mut general = thread(
            "slack:C1:1700000000.000100",
            Some("deploy the docs"),
            ThreadStatus::Idle,
            0,
        );
        general.slack = Some(origin("C1", Some("general"), Some("Ann")));
        let mut dm = thread(
            "slack:D1:1700000000.000100",
            Some("hi"),
            ThreadStatus::Idle,
            0,
        );
        dm.slack = Some(origin("D1", None, None));
        let mut hostile = thread(
            "slack:C2:1700000000.000100",
            Some("x"),
            ThreadStatus::Idle,
            0,
        );
        hostile.slack = Some(origin("C2", Some("ops\x1b]0;pwned\x07"), Some("Eve\nroot")));
        let titles: Vec<String> = [general, dm, hostile]
            .iter()
            .map(|t| Row::of(t, now).title)
            .collect();
        assert_eq!(
            titles,
            [
                "#general · Ann · deploy the docs",
                "DM · U1 · hi",
                "#ops · Eve root · x"
            ]
        );
    }

    /// A narrow terminal keeps the titles and shortens the keys; every line fits, measured in
    /// columns, and the columns stay aligned with a CJK title cut.
    #[test]
    fn a_narrow_terminal_keeps_the_title_and_shortens_the_key() {
        let fits = |printed: &str, width: usize| {
            assert!(printed.lines().all(|l| columns(l) <= width), "{printed}");
            // Every row's harness starts in the header's HARNESS column.
            let at = |line: &str, word: &str| line.find(word).map(|i| columns(&line[..i]));
            let mut lines = printed.lines();
            let harness = at(lines.next().unwrap(), "HARNESS");
            assert!(lines.all(|l| at(l, "shell") == harness), "{printed}");
        };
        let printed = table(&rows(), Some(100));
        fits(&printed, 100);
        assert!(
            printed.contains("run the tests and fix what fails"),
            "{printed}"
        );
        assert!(printed.contains("修复登录页面的测试"), "{printed}");
        assert!(printed.contains(" cli:0196f1c2-7d0e-7c…\n"), "{printed}");
        // Narrower still: the key down to what tells threads apart, then the title gives way
        // too, to a point; a CJK title is cut between characters, never inside one, and
        // padded to its column.
        let printed = table(&rows(), Some(80));
        fits(&printed, 80);
        assert!(printed.contains(" cli:0196f1c2…\n"), "{printed}");
        assert!(
            printed.contains("\nrun the tests and f…  shell"),
            "{printed}"
        );
        assert!(
            printed.contains("\n修复登录页面的测试    shell"),
            "{printed}"
        );
        let printed = table(&rows(), Some(76));
        fits(&printed, 76);
        assert!(printed.contains("\n修复登录页面的…   shell"), "{printed}");
        let printed = table(&rows(), Some(20));
        assert!(printed.contains("\nrun the tests a…  shell"), "{printed}");
        assert!(printed.contains("\n修复登录页面的…   shell"), "{printed}");
    }
}
