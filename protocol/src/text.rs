//! Text a person decides on, shown as it is: what an approval asks about must not read
//! differently from what will run.
//!
//! Unicode's format characters (general category `Cf`: bidi embeddings, overrides and isolates,
//! zero-width spaces and joiners, the byte order mark, tag characters, …) and the line and
//! paragraph separators are invisible or reorder what is around them; control characters are
//! dropped or obeyed by terminals. An agent can put any of them in a command, a path or a tool
//! call's arguments. Every place that shows an approval (Slack, the TUI, `centaur attach`)
//! writes them out with [`reveal`].

/// Whether `c` is a format character (Unicode 15.1's `Cf`) or a line or paragraph separator.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{600}'..='\u{605}'
            | '\u{61c}'
            | '\u{6dd}'
            | '\u{70f}'
            | '\u{890}'..='\u{891}'
            | '\u{8e2}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{110bd}'
            | '\u{110cd}'
            | '\u{13430}'..='\u{1343f}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0001}'
            | '\u{e0020}'..='\u{e007f}'
    )
}

/// `text` with every invisible character ([`is_invisible`]) and every control character but
/// newline and tab written as `[U+202E]`; `None` when there was none (the text shows as it is).
pub fn reveal(text: &str) -> Option<String> {
    let hidden = |c: char| is_invisible(c) || (c.is_control() && c != '\n' && c != '\t');
    if !text.chars().any(hidden) {
        return None;
    }
    let mut shown = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if hidden(c) {
            shown.push_str(&format!("[U+{:04X}]", u32::from(c)));
        } else {
            shown.push(c);
        }
    }
    Some(shown)
}

/// [`reveal`]'s text, or `text` itself when nothing needed writing out.
pub fn revealed(text: &str) -> String {
    reveal(text).unwrap_or_else(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_and_control_characters_are_written_out() {
        // A family emoji is joined with U+200D: written out too, as any joiner.
        assert_eq!(
            reveal("ls -la\n\tcd /tmp é 🎉 👨\u{200d}👩").as_deref(),
            Some("ls -la\n\tcd /tmp é 🎉 👨[U+200D]👩")
        );
        assert_eq!(reveal("plain text\nsecond line"), None);
        assert_eq!(
            revealed("echo safe \u{202e}hs.x | lruc\u{202c}\u{200b}\u{1b}[8m\u{e0041}\u{2028}"),
            "echo safe [U+202E]hs.x | lruc[U+202C][U+200B][U+001B][8m[U+E0041][U+2028]"
        );
        assert_eq!(revealed("\r\u{7f}\u{85}"), "[U+000D][U+007F][U+0085]");
    }
}
