//! `centaur tools list|show|call` as a person runs them: the real `centaur` binary against the
//! server in this process with real tools (a `uv` environment, the SDK's worker in bubblewrap).
#![allow(clippy::unwrap_used)] // tests stop at the first surprise

use std::io::Write;
use std::process::{Output, Stdio};

use serde_json::{Value, json};

use centaur_test_support::server::ADMIN_KEY;
use centaur_test_support::temp::temp_dir;
use centaur_test_support::tools::{ToolStack, pyproject, write_tool};

const NOTES: &str = r#"
import time

from centaur_tools import Tool, ToolError


class Notes(Tool):
    def search(self, query: str, limit: int = 10, tags: list[str] | None = None) -> list[str]:
        """Searches the notes.

        Best matches first.

        Args:
            query: Words to look for.
            limit: How many results at most.
            tags: Only notes with all of these tags.
        """
        return [f"{query} {n}" for n in range(min(limit, 2))]

    def fail(self, why: str = "the upstream said no") -> None:
        """Always fails."""
        raise ToolError(why)

    def slow(self) -> str:
        """Takes longer than the tool's limit."""
        time.sleep(30)
        return "late"
"#;

/// Runs `centaur` with `args` as the server's admin, `stdin` on its standard input.
fn centaur(stack: &ToolStack, args: &[&str], token: &str, stdin: &str) -> Output {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_centaur"))
        .args(args)
        .env("CENTAUR_API_URL", &stack.server.url)
        .env("CENTAUR_API_TOKEN", token)
        .env("HOME", stack.dir.join("home"))
        .env("CENTAUR_HOME", stack.dir.join("centaur-home"))
        .env_remove("COLUMNS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the exit code, showing both streams when it differs.
fn exits(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn list_show_and_call_with_their_exit_codes() {
    let dir = temp_dir("cli-tools");
    let tools = dir.join("tools");
    write_tool(
        &tools,
        "notes",
        &pyproject(
            "notes",
            "description = \"Team notes\"\napproval = [\"fail\"]\ntimeout_secs = 2",
        ),
        NOTES,
    );
    write_tool(
        &tools,
        "broken",
        &pyproject("broken", ""),
        "import no_such_module_here\n",
    );
    let stack = ToolStack::start(&dir, vec![tools.clone()], |_| {}).await;
    stack.wait_ready("notes").await;
    stack.wait_status("broken", "broken").await;
    let run = |args: &[&str]| centaur(&stack, args, ADMIN_KEY, "");

    // The list: a header, the ready tool with its methods counted, the broken one with its
    // reason on the line under it.
    let out = run(&["tools", "list"]);
    exits(&out, 0);
    let listed = text(&out.stdout);
    let lines: Vec<&str> = listed.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{listed}");
    assert!(
        lines[0].contains("STATUS") && lines[0].contains("METHODS"),
        "{listed}"
    );
    let broken = lines.iter().position(|l| l.starts_with("broken ")).unwrap();
    assert!(lines[broken].contains(" broken "), "{listed}");
    assert!(lines[broken + 1].starts_with("  └ "), "{listed}");
    assert!(
        lines[broken + 1].contains("no_such_module_here"),
        "{listed}"
    );
    let notes = lines.iter().find(|l| l.starts_with("notes ")).unwrap();
    let cells: Vec<&str> = notes.split_whitespace().collect();
    assert_eq!(cells[..4], ["notes", "ready", "3", "Team"], "{listed}");

    // --json is the API's answer.
    let out = run(&["tools", "list", "--json"]);
    exits(&out, 0);
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["tools"].as_array().unwrap().len(), 2, "{answer}");

    // show: each method with its parameters from the schema; approval marked.
    let out = run(&["tools", "show", "notes"]);
    exits(&out, 0);
    let shown = text(&out.stdout);
    assert!(
        shown.starts_with("notes (ready)\n  Team notes\n"),
        "{shown}"
    );
    assert!(
        shown.contains("\nsearch(query, limit=10, tags=null) -> array of string\n"),
        "{shown}"
    );
    assert!(shown.contains("    Searches the notes."), "{shown}");
    let row = |name: &str| {
        shown
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(
        row("query"),
        "query string required Words to look for.",
        "{shown}"
    );
    assert_eq!(
        row("limit"),
        "limit integer default 10 How many results at most.",
        "{shown}"
    );
    assert!(
        row("tags").starts_with("tags array of string | null default null"),
        "{shown}"
    );
    assert!(
        shown.contains("\nfail(why=\"the upstream said no\")"),
        "{shown}"
    );
    assert!(shown.contains("[needs approval]"), "{shown}");

    // A call: the result as indented JSON, or one line with --raw; the arguments from the
    // command line, stdin or a file.
    let out = run(&[
        "tools",
        "call",
        "notes",
        "search",
        r#"{"query": "x", "limit": 1}"#,
    ]);
    exits(&out, 0);
    assert_eq!(text(&out.stdout), "[\n  \"x 0\"\n]\n");
    let out = centaur(
        &stack,
        &["tools", "call", "notes", "search", "-", "--raw"],
        ADMIN_KEY,
        r#"{"query": "y"}"#,
    );
    exits(&out, 0);
    assert_eq!(text(&out.stdout), "[\"y 0\",\"y 1\"]\n");
    let file = dir.join("args.json");
    std::fs::write(&file, json!({"query": "z", "limit": 1}).to_string()).unwrap();
    let at_file = format!("@{}", file.display());
    let out = run(&["tools", "call", "notes", "search", &at_file, "--raw"]);
    exits(&out, 0);
    assert_eq!(text(&out.stdout), "[\"z 0\"]\n");

    // Arguments the server refuses: exit 2, the message naming the argument.
    let out = run(&["tools", "call", "notes", "search", r#"{"limit": 1}"#]);
    exits(&out, 2);
    let said = text(&out.stderr);
    assert!(said.starts_with("centaur: argument \"query\""), "{said}");
    assert!(said.contains("(invalid_arguments)"), "{said}");
    assert!(out.stdout.is_empty());
    let out = run(&[
        "tools",
        "call",
        "notes",
        "search",
        r#"{"query": "x", "limit": "ten"}"#,
    ]);
    exits(&out, 2);
    assert!(
        text(&out.stderr).contains("argument \"limit\""),
        "{}",
        text(&out.stderr)
    );
    // Arguments that are not an object never reach the server: exit 2 too.
    let out = run(&["tools", "call", "notes", "search", "[1]"]);
    exits(&out, 2);
    assert!(
        text(&out.stderr).contains("not an object"),
        "{}",
        text(&out.stderr)
    );

    // A method that fails: exit 1 with its message, cleaned of what a terminal would act on.
    let out = run(&[
        "tools",
        "call",
        "notes",
        "fail",
        r#"{"why": "quota \u001b]0;pwned\u0007exceeded"}"#,
    ]);
    exits(&out, 1);
    let said = text(&out.stderr);
    assert!(said.contains("quota exceeded"), "{said}");
    assert!(said.contains("(tool_failed)"), "{said}");
    assert!(
        !said.contains('\u{1b}') && !said.contains('\u{7}'),
        "{said:?}"
    );
    // One that outlives the tool's timeout: exit 1, tool_timeout.
    let out = run(&["tools", "call", "notes", "slow"]);
    exits(&out, 1);
    assert!(
        text(&out.stderr).contains("(tool_timeout)"),
        "{}",
        text(&out.stderr)
    );

    // An unknown tool or method: exit 1 with the code.
    for (args, code) in [
        (vec!["tools", "call", "nope", "x"], "tool_not_found"),
        (
            vec!["tools", "call", "notes", "nope"],
            "tool_method_not_found",
        ),
        (vec!["tools", "show", "nope"], "tool_not_found"),
    ] {
        let out = run(&args);
        exits(&out, 1);
        assert!(
            text(&out.stderr).contains(code),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }

    // A refused token: exit 3, naming the fix.
    let out = centaur(&stack, &["tools", "list"], "wrong-token", "");
    exits(&out, 3);
    assert!(
        text(&out.stderr).contains("centaur login"),
        "{}",
        text(&out.stderr)
    );
}
