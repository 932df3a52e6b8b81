//! Reading a thread's transcript: jumping to either end, searching, copying a block, tables,
//! command output as Markdown, wrapping and the selected block, as the screen shows them and
//! as the keys behave. Driven by recorded event streams, like `screens.rs`.
#![allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm)] // tests stop at the first surprise

use centaur_protocol::Event;
use centaur_test_support::script::Script;
use centaur_test_support::tui::{Tui, screen_text as text};
use centaur_tui::app::{AppEvent, Effect, Focus};
use centaur_tui::reader;
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::KeyCode;
use ratatui::style::Color;

fn app_with(events: &[Event]) -> Tui {
    Tui::following(events)
}

fn reader_status(tui: &Tui) -> Option<String> {
    reader::status(tui.app.thread.as_ref().unwrap())
}

/// The cells where `word` is drawn, on the first row that has it at or after row `from`.
fn cells_of(buffer: &Buffer, word: &str, from: u16) -> Vec<(u16, u16)> {
    for y in from..buffer.area.height {
        let row: Vec<String> = (0..buffer.area.width)
            .map(|x| buffer[(x, y)].symbol().to_owned())
            .collect();
        let chars: Vec<char> = word.chars().collect();
        for x in 0..row.len().saturating_sub(chars.len() - 1) {
            if chars
                .iter()
                .enumerate()
                .all(|(i, c)| row[x + i] == c.to_string())
            {
                return (0..chars.len() as u16).map(|i| (x as u16 + i, y)).collect();
            }
        }
    }
    panic!("{word:?} is not on the screen:\n{}", text(buffer));
}

/// A thread of forty short messages after a first one taller than the screen.
fn long_thread() -> Script {
    let mut script = Script::new();
    script.thread("shell");
    let first: Vec<String> = (1..=20).map(|n| format!("echo {n:02}")).collect();
    script.user(&first.join("\n"));
    script.command("c1", "seq 1 30");
    for n in 1..=30 {
        script.output("c1", &format!("line {n:02}\n"));
    }
    script.finished("c1", 0);
    script.completed("");
    for n in 1..=40 {
        script.user(&format!("message {n:03}"));
    }
    script
}

/// g (and Home) goes to the very first line, however tall the first block, and picks it; G
/// (and End) goes back to the end, picks the last block and follows new output again.
#[test]
fn home_and_end_jump_to_either_end() {
    let mut script = long_thread();
    let now = script.now();
    let mut tui = app_with(script.events());
    tui.screen(60, 16, now);
    // With nothing written, Home in the composer goes to the top too, picking nothing.
    tui.press(KeyCode::Home);
    assert!(
        tui.screen(60, 16, now)
            .starts_with("› echo 01\n  echo 02\n")
    );
    tui.press(KeyCode::End);
    tui.press(KeyCode::Tab);
    tui.press(KeyCode::Char('g'));
    let top = tui.screen(60, 16, now);
    insta::assert_snapshot!("top", top);
    assert!(top.starts_with("▌ › echo 01\n▌   echo 02\n"), "{top}");
    assert_eq!(tui.app.thread.as_ref().unwrap().selected, Some(0));

    tui.press(KeyCode::Char('G'));
    let bottom = tui.screen(60, 16, now);
    insta::assert_snapshot!("bottom", bottom);
    assert!(bottom.contains("message 040"), "{bottom}");
    assert_eq!(tui.view.scrolled(), 0, "at the end, following");
    let thread = tui.app.thread.as_ref().unwrap();
    assert_eq!(thread.selected, Some(thread.transcript.blocks().len() - 1));

    // Home and End do the same, and at the end new output shows as it arrives.
    tui.press(KeyCode::Home);
    assert!(tui.screen(60, 16, now).starts_with("▌ › echo 01\n"));
    tui.press(KeyCode::End);
    tui.screen(60, 16, now);
    assert_eq!(tui.view.scrolled(), 0);
    script.agent("a new answer");
    let event = script.events().last().unwrap().clone();
    tui.app.handle(AppEvent::Server(Box::new(event)));
    let followed = tui.screen(60, 16, now);
    assert!(followed.contains("a new answer"), "{followed}");
}

fn searchable() -> Script {
    let mut script = Script::new();
    script.thread("codex");
    script.user("Why does the client Retry so often?");
    script.stream(
        "It retries on every **5xx**; the retry delay doubles each time, up to 2 s.",
        20,
    );
    script.command("c1", "grep -rn retry src/");
    script.output("c1", "src/client.rs:42:    let retries = 3;\n");
    script.finished("c1", 0);
    script.completed("");
    script
}

/// Ctrl-F opens the search line; the query is typed there, the matches are counted as it is, and
/// Enter goes to the nearest match above (the last one, from the end); n and N move between
/// them, wrapping, and say which one is shown.
#[test]
fn searching_the_transcript() {
    let script = searchable();
    let now = script.now();
    let mut tui = app_with(script.events());
    tui.ctrl('f');
    tui.typed("retr");
    let typing = tui.screen(70, 18, now);
    insta::assert_snapshot!("search_typing", typing);
    assert_eq!(reader_status(&tui).unwrap(), "/retr  (5 matches)");
    assert_eq!(
        reader::mode(tui.app.thread.as_ref().unwrap()),
        reader::Mode::Search
    );

    tui.press(KeyCode::Enter);
    let found = tui.screen(70, 18, now);
    insta::assert_snapshot!("search_found", found);
    assert!(
        reader_status(&tui)
            .unwrap()
            .starts_with("match 5 of 5 for `retr`"),
        "{:?}",
        reader_status(&tui)
    );
    tui.press(KeyCode::Char('n'));
    assert!(reader_status(&tui).unwrap().starts_with("match 1 of 5"));
    assert_eq!(tui.app.thread.as_ref().unwrap().selected, Some(0));
    tui.press(KeyCode::Char('N'));
    tui.press(KeyCode::Char('N'));
    assert!(reader_status(&tui).unwrap().starts_with("match 4 of 5"));

    // The current match is highlighted apart from the others.
    let buffer = tui.draw(70, 18, now);
    // The fourth match: in the command line (the fifth is in its output).
    let current = cells_of(&buffer, "retry src/", 0);
    let in_output = cells_of(&buffer, "retries = 3", 0);
    let bg = |cells: &[(u16, u16)]| buffer[cells[0]].bg;
    assert_eq!(bg(&current), Color::LightRed, "{}", text(&buffer));
    assert_eq!(bg(&in_output), Color::Yellow, "{}", text(&buffer));

    // Esc ends the search and its highlighting; the transcript keeps the focus.
    tui.press(KeyCode::Esc);
    let thread = tui.app.thread.as_ref().unwrap();
    assert!(thread.reading.search.is_none());
    assert_eq!(thread.focus, Focus::Transcript);
    let after = tui.draw(70, 18, now);
    let cell = cells_of(&after, "retr", 0)[0];
    assert_eq!(after[cell].bg, Color::Reset, "{}", text(&after));
}

/// A query with no match says so, and leaves the view where it was.
#[test]
fn a_search_without_a_match_says_so() {
    let script = searchable();
    let now = script.now();
    let mut tui = app_with(script.events());
    tui.ctrl('f');
    tui.typed("timeout");
    tui.press(KeyCode::Enter);
    assert_eq!(
        reader_status(&tui).unwrap(),
        "no match for `timeout`",
        "{}",
        tui.screen(70, 18, now)
    );
    tui.press(KeyCode::Char('n'));
    assert_eq!(reader_status(&tui).unwrap(), "no match for `timeout`");
    assert_eq!(tui.view.scrolled(), 0);
}

/// Esc while typing (or Backspace past the start) cancels: the focus and the selection are as
/// before the search.
#[test]
fn cancelling_a_search_returns_to_where_it_started() {
    let script = searchable();
    let mut tui = app_with(script.events());
    tui.ctrl('f');
    tui.typed("retry");
    assert_eq!(tui.app.thread.as_ref().unwrap().selected, Some(2));
    tui.press(KeyCode::Esc);
    let thread = tui.app.thread.as_ref().unwrap();
    assert_eq!(thread.focus, Focus::Composer);
    assert_eq!(thread.selected, None);
    assert!(thread.reading.search.is_none());

    tui.ctrl('f');
    tui.typed("r");
    tui.press(KeyCode::Backspace);
    tui.press(KeyCode::Backspace);
    let thread = tui.app.thread.as_ref().unwrap();
    assert_eq!(thread.focus, Focus::Composer);
    assert!(thread.reading.search.is_none());
}

/// A match in a folded block's hidden part opens the block, and the view scrolls to the
/// match's line, not just to the block.
#[test]
fn a_match_in_folded_output_is_opened_and_shown() {
    let mut script = Script::new();
    script.thread("shell");
    script.user("seq 1 60");
    script.command("c1", "seq 1 60");
    for n in 1..=60 {
        let word = if n == 7 { "needle" } else { "hay" };
        script.output("c1", &format!("{n} {word}\n"));
    }
    script.finished("c1", 0);
    script.completed("");
    for n in 1..=20 {
        script.user(&format!("message {n}"));
    }
    let now = script.now();
    let mut tui = app_with(script.events());
    tui.ctrl('f');
    tui.typed("needle");
    tui.press(KeyCode::Enter);
    let screen = tui.screen(60, 16, now);
    insta::assert_snapshot!("search_in_folded_output", screen);
    assert!(screen.contains("7 needle"), "{screen}");
    assert!(tui.app.thread.as_ref().unwrap().is_open(1));
}

/// `y` copies the picked block's plain text (the output as the screen shows it, without
/// escape sequences) and says where it went.
#[test]
fn y_copies_the_picked_block() {
    let mut script = Script::new();
    script.thread("shell");
    script.user("ls --color");
    script.command("c1", "ls --color");
    script.output("c1", "\x1b[34msrc\x1b[0m\nREADME.md\n");
    script.finished("c1", 0);
    script.completed("");
    let now = script.now();
    let mut tui = app_with(script.events());
    tui.press(KeyCode::Tab);
    let effects = tui.press(KeyCode::Char('y'));
    assert_eq!(
        effects,
        [Effect::Copy("$ ls --color\nsrc\nREADME.md".into())]
    );
    // Nothing is said to be copied anywhere before the runtime says where it went.
    assert_eq!(reader_status(&tui).unwrap(), "copying 3 lines…");
    let file = std::path::PathBuf::from("/run/user/1000/centaur/centaur-copy-1.txt");
    tui.app.handle(AppEvent::Copied(Ok(file.clone())));
    let told = reader_status(&tui).unwrap();
    assert_eq!(
        told,
        format!(
            "copied 3 lines to the clipboard (where the terminal allows) and to {}",
            file.display()
        )
    );
    assert!(tui.screen(200, 12, now).contains(&told));
    // A file that could not be written says why.
    tui.press(KeyCode::Char('y'));
    tui.app.handle(AppEvent::Copied(Err(
        "/tmp/centaur-0 is not private (it is a symbolic link): remove it, or set XDG_RUNTIME_DIR"
            .into(),
    )));
    assert_eq!(
        reader_status(&tui).unwrap(),
        "copied 3 lines to the clipboard (where the terminal allows), not to a file: \
         /tmp/centaur-0 is not private (it is a symbolic link): remove it, or set XDG_RUNTIME_DIR"
    );
    // The message, picked with k.
    tui.press(KeyCode::Char('k'));
    let effects = tui.press(KeyCode::Char('y'));
    assert_eq!(effects, [Effect::Copy("ls --color".into())]);
}

/// Tables in the agent's Markdown line up, at any width.
#[test]
fn markdown_tables_are_aligned() {
    let mut script = Script::new();
    script.thread("claude-code");
    script.user("Which harnesses need a key?");
    script.stream(
        "| harness | needs | notes |\n|---|:---:|---|\n| codex | OpenAI key | runs `codex app-server` |\n| claude-code | Anthropic key | |\n| shell | nothing | runs each message as a command |\n",
        40,
    );
    script.completed("");
    let now = script.now();
    let mut tui = app_with(script.events());
    insta::assert_snapshot!("table_wide", tui.screen(80, 14, now));
    insta::assert_snapshot!("table_narrow", tui.screen(40, 18, now));
}

/// `m` shows command output as Markdown (a shell thread printing a Markdown file), and again as
/// text; the mode names it.
#[test]
fn m_shows_command_output_as_markdown() {
    let mut script = Script::new();
    script.thread("shell");
    script.user("cat NOTES.md");
    script.command("c1", "cat NOTES.md");
    script.output(
        "c1",
        "# Notes\n\nSome **bold** text.\n\n| a | b |\n|---|---|\n| 1 | 22 |\n",
    );
    script.finished("c1", 0);
    script.completed("");
    let now = script.now();
    let mut tui = app_with(script.events());
    tui.press(KeyCode::Tab);
    tui.press(KeyCode::Enter);
    insta::assert_snapshot!("output_as_text", tui.screen(60, 20, now));
    tui.press(KeyCode::Char('m'));
    assert_eq!(
        reader::mode(tui.app.thread.as_ref().unwrap()),
        reader::Mode::Read {
            output_as_markdown: true
        }
    );
    assert_eq!(
        reader::mode(tui.app.thread.as_ref().unwrap()).to_string(),
        "read · output as Markdown"
    );
    let markdown = tui.screen(60, 20, now);
    insta::assert_snapshot!("output_as_markdown", markdown);
    assert!(markdown.contains("  a │ b"), "{markdown}");
    tui.press(KeyCode::Char('m'));
    assert!(tui.screen(60, 20, now).contains("| a | b |"));
}

/// `m` during a search counts the matches again in what is now shown: `**` is in the output
/// as text, not once it is drawn as Markdown (bold), and back again.
#[test]
fn m_counts_a_search_again() {
    let mut script = Script::new();
    script.thread("shell");
    script.user("cat NOTES.md");
    script.command("c1", "cat NOTES.md");
    script.output("c1", "Some **bold** and **strong** text.\n");
    script.finished("c1", 0);
    script.completed("");
    let mut tui = app_with(script.events());
    let matches = |tui: &Tui| {
        let search = tui.app.thread.as_ref().unwrap().reading.search.clone();
        let search = search.unwrap();
        (search.matches.len(), search.current)
    };
    tui.ctrl('f');
    tui.typed("**");
    tui.press(KeyCode::Enter);
    assert_eq!(matches(&tui), (4, Some(3)));
    assert!(reader_status(&tui).unwrap().starts_with("match 4 of 4"));
    tui.press(KeyCode::Char('m'));
    assert_eq!(matches(&tui), (0, None));
    tui.press(KeyCode::Char('n'));
    assert_eq!(reader_status(&tui).unwrap(), "no match for `**`");
    tui.press(KeyCode::Char('m'));
    assert_eq!(matches(&tui), (4, Some(0)));
    tui.press(KeyCode::Char('j'));
    assert!(
        reader_status(&tui).unwrap().starts_with("match 1 of 4"),
        "{:?}",
        reader_status(&tui)
    );
}

/// n counts again what changed since the last count: output added to a running command's
/// block is searched, not its count from before.
#[test]
fn n_counts_output_that_arrived_since() {
    let mut script = Script::new();
    script.thread("shell");
    script.user("make");
    script.command("c1", "make");
    script.output("c1", "retry 1\n");
    let mut tui = app_with(script.events());
    tui.ctrl('f');
    tui.typed("retry");
    tui.press(KeyCode::Enter);
    assert!(reader_status(&tui).unwrap().starts_with("match 1 of 1"));
    script.output("c1", "retry 2\n");
    tui.app.handle(AppEvent::Server(Box::new(
        script.events().last().unwrap().clone(),
    )));
    tui.press(KeyCode::Char('n'));
    assert!(
        reader_status(&tui).unwrap().starts_with("match 2 of 2"),
        "{:?}",
        reader_status(&tui)
    );
}

/// Wrapped lines start with their text, not with the space they broke at; indented output
/// stays indented.
#[test]
fn wrapped_lines_have_no_leading_space() {
    let mut script = Script::new();
    script.thread("shell");
    script.user("Explain why the tests are slow.  Then make them faster, without   changing what they check.");
    script.command("c1", "python3 run.py");
    script.output(
        "c1",
        "Traceback (most recent call last):\n    File \"run.py\", line 3, in main    raise SystemExit(\"the fixtures are missing\")\n",
    );
    script.finished("c1", 1);
    script.completed("");
    let now = script.now();
    let mut tui = app_with(script.events());
    let screen = tui.screen(30, 24, now);
    insta::assert_snapshot!("wrapped", screen);
}

/// The picked block has a bar down its side, and moving picks the next block of any kind.
#[test]
fn the_picked_block_is_marked() {
    let script = searchable();
    let now = script.now();
    let mut tui = app_with(script.events());
    tui.press(KeyCode::Tab);
    tui.press(KeyCode::Char('k'));
    let screen = tui.screen(60, 16, now);
    insta::assert_snapshot!("picked", screen);
    assert_eq!(tui.app.thread.as_ref().unwrap().selected, Some(1));
    let buffer = tui.draw(60, 16, now);
    let bar = cells_of(&buffer, "▌", 0);
    assert_eq!(buffer[bar[0]].fg, Color::Cyan);
}

/// The text of the cells drawn on background `bg`, in reading order.
fn cells_in(buffer: &Buffer, bg: Color) -> String {
    let mut found = String::new();
    for y in 0..buffer.area.height {
        for x in 0..buffer.area.width {
            if buffer[(x, y)].bg == bg {
                found.push_str(buffer[(x, y)].symbol());
            }
        }
    }
    found
}

/// The count, n/N and the highlight agree on what is drawn: a match a wrap splits is
/// highlighted on both lines, and one in a folded command's hidden output counts (the block
/// opens when it becomes the current one), without shifting which match is current.
#[test]
fn matches_split_by_a_wrap_or_folded_away_are_counted_as_shown() {
    let mut script = Script::new();
    script.thread("shell");
    script.user("cat log");
    script.command("c1", "cat log");
    script.output("c1", "start\nhidden needle here\n");
    for n in 1..=8 {
        script.output("c1", &format!("filler {n}\n"));
    }
    // At 40 columns (38 beside the picked block's bar), hard-wrapped mid-word.
    script.output("c1", &format!("{}needle end\n", "x".repeat(34)));
    script.finished("c1", 0);
    script.completed("");
    let now = script.now();
    let mut tui = app_with(script.events());
    tui.ctrl('f');
    tui.typed("needle");
    assert_eq!(reader_status(&tui).unwrap(), "/needle  (2 matches)");

    // Folded: the hidden one is not drawn; the current one (the last) is split by the wrap
    // and highlighted whole, on both lines.
    let buffer = tui.draw(40, 20, now);
    let screen = text(&buffer);
    assert!(!screen.contains("hidden needle"), "{screen}");
    assert!(screen.contains("more lines"), "{screen}");
    assert!(
        !screen.contains("needle end"),
        "the match is split:\n{screen}"
    );
    assert_eq!(cells_in(&buffer, Color::LightRed), "needle", "{screen}");
    insta::assert_snapshot!("search_split_by_a_wrap", screen);

    // Found, folded again, and N: the hidden one is current, and its block opens.
    tui.press(KeyCode::Enter);
    assert!(reader_status(&tui).unwrap().starts_with("match 2 of 2"));
    tui.press(KeyCode::Char(' '));
    tui.draw(40, 20, now);
    tui.press(KeyCode::Char('N'));
    assert!(reader_status(&tui).unwrap().starts_with("match 1 of 2"));
    let buffer = tui.draw(40, 20, now);
    let screen = text(&buffer);
    assert!(screen.contains("hidden needle here"), "{screen}");
    assert_eq!(cells_in(&buffer, Color::LightRed), "needle", "{screen}");
    assert_eq!(cells_in(&buffer, Color::Yellow), "needle", "{screen}");
}
