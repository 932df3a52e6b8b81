//! Code highlighting with syntect. Its grammars take a moment to load, so they load on a
//! background thread: until they are ready, code is drawn plain, and the view redraws when
//! they arrive. Nothing on the render path waits for them.

use std::sync::OnceLock;

use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Span;
use syntect::easy::HighlightLines;
use syntect::highlighting::{FontStyle, Theme, ThemeSet};
use syntect::parsing::SyntaxSet;

struct Highlighter {
    syntaxes: SyntaxSet,
    theme: Theme,
}

static HIGHLIGHTER: OnceLock<Highlighter> = OnceLock::new();

/// Languages agents write most; their grammars compile their patterns on first use, which
/// takes tens of milliseconds, so that happens here rather than in a frame.
const WARM: &[&str] = &[
    "rust", "sh", "python", "js", "ts", "json", "go", "yaml", "toml", "diff",
];

fn build() -> Highlighter {
    let mut themes = ThemeSet::load_defaults();
    let highlighter = Highlighter {
        syntaxes: SyntaxSet::load_defaults_newlines(),
        theme: themes
            .themes
            .remove("base16-ocean.dark")
            .expect("syntect ships base16-ocean.dark"),
    };
    for language in WARM {
        if let Some(syntax) = highlighter.syntaxes.find_syntax_by_token(language) {
            let mut lines = HighlightLines::new(syntax, &highlighter.theme);
            let _ =
                lines.highlight_line("let x = \"a\" + 1 # // /* */ {}\n", &highlighter.syntaxes);
        }
    }
    highlighter
}

/// Loads the grammars on a background thread; `ready` runs once they are in.
pub fn load_in_background(ready: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .name("highlight-load".into())
        .spawn(move || {
            HIGHLIGHTER.get_or_init(build);
            ready();
        })
        .expect("a thread");
}

/// Loads the grammars now (tests and benchmarks, where output must not depend on timing).
pub fn load_now() {
    HIGHLIGHTER.get_or_init(build);
}

/// Whether the grammars are loaded.
pub fn is_ready() -> bool {
    HIGHLIGHTER.get().is_some()
}

/// `code` (one line per entry, without newlines) highlighted as `language`, or `None` when the
/// grammars are not loaded yet or the language is unknown.
pub fn highlight(language: &str, code: &[&str]) -> Option<Vec<Vec<Span<'static>>>> {
    let highlighter = HIGHLIGHTER.get()?;
    let token = language.split([',', ' ']).next().unwrap_or("").trim();
    if token.is_empty() {
        return None;
    }
    let syntax = highlighter
        .syntaxes
        .find_syntax_by_token(token)
        .or_else(|| highlighter.syntaxes.find_syntax_by_extension(token))?;
    let mut lines = HighlightLines::new(syntax, &highlighter.theme);
    let mut out = Vec::with_capacity(code.len());
    for line in code {
        let with_newline = format!("{line}\n");
        let ranges = lines
            .highlight_line(&with_newline, &highlighter.syntaxes)
            .ok()?;
        out.push(
            ranges
                .into_iter()
                .filter_map(|(style, text)| {
                    let text = text.trim_end_matches('\n');
                    (!text.is_empty()).then(|| Span::styled(text.to_owned(), convert(style)))
                })
                .collect(),
        );
    }
    Some(out)
}

fn convert(style: syntect::highlighting::Style) -> Style {
    let fg = style.foreground;
    let mut out = Style::default().fg(Color::Rgb(fg.r, fg.g, fg.b));
    if style.font_style.contains(FontStyle::BOLD) {
        out = out.add_modifier(Modifier::BOLD);
    }
    if style.font_style.contains(FontStyle::ITALIC) {
        out = out.add_modifier(Modifier::ITALIC);
    }
    out
}
