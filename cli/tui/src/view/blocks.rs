//! Each kind of transcript block as lines at a width, folded or open.

use centaur_protocol::text::revealed;
use centaur_protocol::{ApprovalKind, ApprovalResolution, Role};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use serde_json::Value;
use unicode_width::UnicodeWidthStr;

use super::text::{duration, truncate};
use super::{DIM, OUTPUT};
use crate::markdown;
use crate::marks;
use crate::transcript::{Block, ToolOutcome, TurnOutcome, compact, output_lines};
use crate::wrap::wrap;

/// Output lines shown for a folded command.
const FOLDED_OUTPUT: usize = 5;

/// The hanging indent of a block's continuation lines.
fn indent() -> Span<'static> {
    Span::raw("  ")
}

/// One block as lines at `width`; command output rendered as Markdown when
/// `output_as_markdown`.
pub fn lines(
    block: &Block,
    open: bool,
    width: usize,
    output_as_markdown: bool,
) -> Vec<Line<'static>> {
    match block {
        Block::User { role, text, author } => user(*role, text, author.as_deref(), width),
        Block::Agent { text, .. } => markdown::render(text, width),
        Block::Reasoning { text } => reasoning(text, open, width),
        Block::Command {
            command,
            output,
            exit,
        } => self::command(command, output, *exit, open, width, output_as_markdown),
        Block::FileChange { path, kind } => {
            let line = Line::from(vec![
                Span::styled(format!("✎ {kind} "), Style::new().magenta()),
                Span::raw(path.clone()),
            ]);
            vec![marks::mark(&line).unwrap_or(line)]
        }
        Block::Tool {
            tool,
            method,
            arguments,
            outcome,
        } => self::tool(
            &format!("{tool}.{method}"),
            arguments,
            outcome.as_ref(),
            open,
            width,
        ),
        Block::Approval {
            kind,
            summary,
            resolved,
            ..
        } => approval(*kind, summary, resolved.as_ref(), width),
        Block::EgressDenied { host, reason } => wrap(
            &Line::from(vec![
                Span::styled("⊘ ", Style::new().red().bold()),
                Span::styled(
                    format!("egress to {host} denied: {reason}"),
                    Style::new().red(),
                ),
            ]),
            width,
            &indent(),
            false,
        ),
        Block::TurnEnd { outcome, took } => turn_end(outcome, *took, width),
        Block::Note { text } => wrap(
            &Line::styled(text.clone(), DIM),
            width,
            &Span::raw(""),
            false,
        ),
    }
}

/// A person's message: `›` (or the role, or who wrote it from another platform: `Ann (Slack)
/// ›`), then its lines in bold.
fn user(role: Role, text: &str, author: Option<&str>, width: usize) -> Vec<Line<'static>> {
    let label = match (author, role) {
        (Some(author), _) => format!("{author} › "),
        (None, Role::User) => "› ".to_owned(),
        (None, other @ Role::Assistant | other @ Role::System) => format!("{} › ", other.as_str()),
    };
    let mut lines = Vec::new();
    for (i, row) in text.split('\n').enumerate() {
        let marker = if i == 0 {
            Span::styled(label.clone(), Style::new().cyan().bold())
        } else {
            Span::raw(" ".repeat(label.width()))
        };
        let line = Line::from(vec![
            marker,
            Span::styled(row.to_owned(), Style::new().bold()),
        ]);
        lines.extend(wrap(&line, width, &indent(), false));
    }
    lines
}

/// The agent's reasoning: its first line when folded, all of it open.
fn reasoning(text: &str, open: bool, width: usize) -> Vec<Line<'static>> {
    let style = DIM.add_modifier(Modifier::ITALIC);
    if !open {
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let line = Line::from(vec![
            Span::styled("▸ thinking · ", style),
            Span::styled(first.to_owned(), style),
        ]);
        return vec![truncate(&line, width)];
    }
    let mut lines = vec![Line::styled("▾ thinking", style)];
    for row in text.lines() {
        let line = Line::styled(format!("  {row}"), style);
        lines.extend(wrap(&line, width, &indent(), false));
    }
    lines
}

/// A command with how it ended, and its output (as text, or rendered as Markdown): the last
/// lines when folded.
fn command(
    command: &str,
    output: &str,
    exit: Option<Option<i32>>,
    open: bool,
    width: usize,
    output_as_markdown: bool,
) -> Vec<Line<'static>> {
    let status = match exit {
        None => Span::styled(" …", Style::new().yellow()),
        Some(Some(0)) => Span::styled(" ✓", Style::new().green()),
        Some(Some(code)) => Span::styled(format!(" ✗ exit {code}"), Style::new().red()),
        Some(None) => Span::styled(" ✗ ended without a status", Style::new().red()),
    };
    let header = Line::from(vec![
        Span::styled("$ ", DIM),
        Span::styled(command.to_owned(), Style::new().bold()),
        status,
    ]);
    let mut lines = wrap(&header, width, &indent(), false);
    // Folded, the last rows of the output show: rows of text as the command printed them,
    // lines of Markdown as rendered.
    let rows: Vec<Line<'static>> = if output_as_markdown {
        markdown::render(
            &output_lines(output).join("\n"),
            width.saturating_sub(2).max(1),
        )
        .into_iter()
        .map(|line| {
            let mut spans = vec![indent()];
            spans.extend(line.spans);
            Line::from(spans)
        })
        .collect()
    } else {
        output_lines(output)
            .into_iter()
            .map(|row| Line::styled(format!("  {row}"), OUTPUT))
            .collect()
    };
    let shown = if open || rows.len() <= FOLDED_OUTPUT {
        &rows[..]
    } else {
        let hidden = rows.len() - FOLDED_OUTPUT;
        let more = if hidden == 1 {
            "1 more line".to_owned()
        } else {
            format!("{hidden} more lines")
        };
        lines.push(Line::styled(
            format!("  … {more} (Tab to pick, Enter or Ctrl-O to show)"),
            DIM,
        ));
        if !output_as_markdown {
            // Rendered as Markdown, every row was laid out (and its matches counted) already.
            marks::skip(&rows[..hidden]);
        }
        &rows[hidden..]
    };
    for row in shown {
        if output_as_markdown {
            lines.push(row.clone());
        } else {
            lines.extend(wrap(row, width, &indent(), true));
        }
    }
    lines
}

/// A tool call `name` with its arguments and how it ended; open, its result or error too.
fn tool(
    name: &str,
    arguments: &Value,
    outcome: Option<&ToolOutcome>,
    open: bool,
    width: usize,
) -> Vec<Line<'static>> {
    let status = match outcome {
        None => Span::styled(" …", Style::new().yellow()),
        Some(ToolOutcome::Returned(_)) => Span::styled(" ✓", Style::new().green()),
        Some(ToolOutcome::Failed(_)) => Span::styled(" ✗", Style::new().red()),
    };
    let header = Line::from(vec![
        Span::styled("⚙ ", Style::new().blue()),
        Span::styled(name.to_owned(), Style::new().bold()),
        Span::styled(format!(" {}", compact(arguments)), DIM),
        status,
    ]);
    if !open {
        // Cut to one line, its matches not marked but counted, as open.
        marks::skip(std::slice::from_ref(&header));
        let mut lines = vec![truncate(&header, width)];
        if let Some(ToolOutcome::Failed(error)) = outcome {
            lines.extend(wrap(
                &Line::styled(format!("  {error}"), Style::new().red()),
                width,
                &indent(),
                false,
            ));
        }
        return lines;
    }
    let mut lines = wrap(&header, width, &indent(), false);
    let body = match outcome {
        Some(ToolOutcome::Returned(result)) => {
            serde_json::to_string_pretty(result).unwrap_or_default()
        }
        Some(ToolOutcome::Failed(error)) => error.clone(),
        None => String::new(),
    };
    for row in body.lines() {
        lines.extend(wrap(
            &Line::styled(format!("  {row}"), OUTPUT),
            width,
            &indent(),
            true,
        ));
    }
    lines
}

/// An approval request: waiting, or how it was resolved and by whom.
fn approval(
    kind: ApprovalKind,
    summary: &str,
    resolved: Option<&(ApprovalResolution, String)>,
    width: usize,
) -> Vec<Line<'static>> {
    let what = kind_label(kind);
    let summary = revealed(summary);
    let line = match resolved {
        None => Line::from(vec![
            Span::styled("? ", Style::new().yellow().bold()),
            Span::styled(format!("{what} approval: {summary}"), Style::new().yellow()),
            Span::styled(" — waiting", DIM),
        ]),
        Some((resolution, by)) => {
            let (mark, style, said) = match resolution {
                ApprovalResolution::Approve => ("✓ ", Style::new().green(), "approved"),
                ApprovalResolution::ApproveForSession => {
                    ("✓ ", Style::new().green(), "approved for the session")
                }
                ApprovalResolution::Deny => ("✗ ", Style::new().red(), "denied"),
                ApprovalResolution::Cancelled => ("· ", DIM, "cancelled"),
            };
            Line::from(vec![
                Span::styled(mark, style),
                Span::raw(format!("{what} approval: {summary}")),
                Span::styled(format!(" — {said} by {by}"), DIM),
            ])
        }
    };
    wrap(&line, width, &indent(), false)
}

fn turn_end(
    outcome: &TurnOutcome,
    took: Option<chrono::Duration>,
    width: usize,
) -> Vec<Line<'static>> {
    let took = took
        .map(|d| format!(" in {}", duration(d.num_milliseconds().max(0) as u64)))
        .unwrap_or_default();
    let line = match outcome {
        TurnOutcome::Completed => Line::styled(format!("✓ done{took}"), DIM),
        TurnOutcome::Failed(error) => Line::from(vec![
            Span::styled("✗ turn failed: ", Style::new().red().bold()),
            Span::styled(error.clone(), Style::new().red()),
        ]),
        TurnOutcome::Cancelled(reason) => Line::from(vec![
            Span::styled("⏹ turn cancelled: ", Style::new().yellow().bold()),
            Span::raw(reason.clone()),
        ]),
    };
    wrap(&line, width, &indent(), false)
}

pub fn kind_label(kind: ApprovalKind) -> &'static str {
    match kind {
        ApprovalKind::Command => "command",
        ApprovalKind::FileChange => "file change",
        ApprovalKind::Tool => "tool",
    }
}
