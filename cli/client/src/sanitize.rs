//! Text from a thread made safe to print on a person's terminal.
//!
//! Whatever runs in a sandbox decides what its output, the agent's text and the error messages
//! say, so printed raw it could set the terminal's title, clear the screen, move the cursor or
//! write the clipboard (OSC 52). This module keeps printable text, line breaks and tabs, and
//! removes every control sequence and control character. Colours (SGR: `ESC [` digits, `;` or
//! `:`, then `m`) are kept only when asked, that is when stdout is a terminal.
//!
//! What is removed: CSI sequences other than colours (7-bit `ESC [` and the C1 form U+009B),
//! OSC (titles, clipboard, hyperlinks), DCS, SOS, PM and APC strings, in their 7-bit and C1
//! forms; other escape sequences (`ESC` with optional intermediates and one final character);
//! C1 controls U+0080–U+009F; and C0 controls other than line feed and tab, and DEL.
//!
//! A carriage return on its own becomes a line break, so output cannot go back and overwrite what
//! was printed before it; `\r\n` (and any run of `\r` before `\n`) is one line break.
//!
//! A sequence that never ends cannot hide more than itself: a line feed ends any sequence (the
//! line feed is kept), CAN and SUB cancel it, `ESC` starts a new one, and the end of the text
//! (`finish`) drops what was left open. A CSI interrupted by a character that cannot be part of
//! it ends there and the character is printed.
//!
//! Text that arrives in pieces (command output, streamed agent text) goes through one
//! [`Sanitizer`], so a sequence cut between two pieces is still recognised.

use std::io::IsTerminal;

use serde::Serialize;

/// Whether colour sequences survive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Colours {
    /// Colour sequences are printed as they came (for a terminal).
    Keep,
    /// Colour sequences are removed too (for a file or a pipe).
    #[default]
    Drop,
}

impl Colours {
    /// `Keep` when stdout is a terminal, `Drop` otherwise.
    pub fn for_stdout() -> Colours {
        if std::io::stdout().is_terminal() {
            Colours::Keep
        } else {
            Colours::Drop
        }
    }
}

/// The longest colour sequence kept (parameters only); a longer one is removed.
const MAX_SGR_PARAMS: usize = 64;

const ESC: char = '\x1b';
const BEL: char = '\x07';
const CAN: char = '\x18';
const SUB: char = '\x1a';
/// The C1 forms of CSI, OSC, DCS, SOS, PM, APC and ST.
const C1_CSI: char = '\u{9b}';
const C1_OSC: char = '\u{9d}';
const C1_DCS: char = '\u{90}';
const C1_SOS: char = '\u{98}';
const C1_PM: char = '\u{9e}';
const C1_APC: char = '\u{9f}';
const C1_ST: char = '\u{9c}';

/// Where the parser is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Plain text.
    Ground,
    /// After `ESC`.
    Escape,
    /// After `ESC` and one or more intermediate characters (0x20–0x2F).
    EscapeIntermediate,
    /// Inside a control sequence; `seven_bit` when it began with `ESC [` (only those can be
    /// colours), `colour` while it can still be one.
    Csi { seven_bit: bool, colour: bool },
    /// Inside an OSC, DCS, SOS, PM or APC string, which ends at BEL or ST.
    String,
    /// After `ESC` inside a string: `\` ends the string, anything else starts a new escape.
    StringEscape,
}

/// Removes control sequences from text that may arrive in pieces; see the module's doc.
#[derive(Clone, Debug)]
pub struct Sanitizer {
    colours: Colours,
    state: State,
    /// A carriage return was seen and not yet printed as a line break.
    pending_cr: bool,
    /// The parameters of the control sequence being read, while it can be a colour.
    params: String,
    /// A colour was printed and not reset since.
    coloured: bool,
}

impl Sanitizer {
    pub fn new(colours: Colours) -> Sanitizer {
        Sanitizer {
            colours,
            state: State::Ground,
            pending_cr: false,
            params: String::new(),
            coloured: false,
        }
    }

    /// Appends the printable part of `input` to `out`. A sequence left open at the end of
    /// `input` goes on in the next call.
    pub fn push(&mut self, input: &str, out: &mut String) {
        for c in input.chars() {
            self.step(c, out);
        }
    }

    /// Ends the text: an open sequence is dropped, a last carriage return becomes a line break,
    /// and colours still on are reset. The sanitizer can then start a new text.
    pub fn finish(&mut self, out: &mut String) {
        if std::mem::take(&mut self.pending_cr) {
            out.push('\n');
        }
        if std::mem::take(&mut self.coloured) {
            out.push_str("\x1b[0m");
        }
        self.state = State::Ground;
        self.params.clear();
    }

    fn step(&mut self, c: char, out: &mut String) {
        // Sequence introducers and cancels work in every state.
        match c {
            '\n' => {
                self.pending_cr = false;
                self.state = State::Ground;
                out.push('\n');
                return;
            }
            CAN | SUB => {
                self.state = State::Ground;
                return;
            }
            C1_CSI => return self.begin_csi(false),
            C1_OSC | C1_DCS | C1_SOS | C1_PM | C1_APC => {
                self.state = State::String;
                return;
            }
            C1_ST if matches!(self.state, State::String | State::StringEscape) => {
                self.state = State::Ground;
                return;
            }
            _ => {}
        }
        match self.state {
            State::Ground => self.ground(c, out),
            State::Escape => self.escape(c, out),
            State::EscapeIntermediate => match c {
                ESC => self.state = State::Escape,
                '\x20'..='\x2f' => {}
                '\x30'..='\x7e' => self.state = State::Ground,
                c if c.is_control() => {}
                c => {
                    self.state = State::Ground;
                    self.ground(c, out);
                }
            },
            State::Csi { seven_bit, colour } => self.csi(c, seven_bit, colour, out),
            State::String => match c {
                BEL => self.state = State::Ground,
                ESC => self.state = State::StringEscape,
                _ => {}
            },
            State::StringEscape => {
                if c == '\\' {
                    self.state = State::Ground;
                } else {
                    self.escape(c, out);
                }
            }
        }
    }

    fn ground(&mut self, c: char, out: &mut String) {
        if c == '\r' {
            self.pending_cr = true;
            return;
        }
        if std::mem::take(&mut self.pending_cr) {
            out.push('\n');
        }
        match c {
            ESC => self.state = State::Escape,
            '\t' => out.push('\t'),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }

    /// The character after `ESC`.
    fn escape(&mut self, c: char, out: &mut String) {
        match c {
            '[' => self.begin_csi(true),
            ']' | 'P' | 'X' | '^' | '_' => self.state = State::String,
            ESC => self.state = State::Escape,
            '\x20'..='\x2f' => self.state = State::EscapeIntermediate,
            '\x30'..='\x7e' => self.state = State::Ground,
            // Other controls inside an escape are ignored, as terminals do.
            c if c.is_control() => {}
            // Not an escape sequence after all: the ESC alone is dropped.
            c => {
                self.state = State::Ground;
                self.ground(c, out);
            }
        }
    }

    fn begin_csi(&mut self, seven_bit: bool) {
        self.params.clear();
        self.state = State::Csi {
            seven_bit,
            colour: seven_bit,
        };
    }

    fn csi(&mut self, c: char, seven_bit: bool, colour: bool, out: &mut String) {
        match c {
            '0'..='9' | ';' | ':' => {
                let colour = colour && self.params.len() < MAX_SGR_PARAMS;
                if colour {
                    self.params.push(c);
                }
                self.state = State::Csi { seven_bit, colour };
            }
            // Private markers and intermediates: not a colour.
            '\x20'..='\x2f' | '<' | '=' | '>' | '?' => {
                self.state = State::Csi {
                    seven_bit,
                    colour: false,
                }
            }
            '\x40'..='\x7e' => {
                self.state = State::Ground;
                if c == 'm' && colour && self.colours == Colours::Keep {
                    out.push_str("\x1b[");
                    out.push_str(&self.params);
                    out.push('m');
                    self.coloured = !self.params.chars().all(|p| p == '0' || p == ';');
                }
                self.params.clear();
            }
            ESC => self.state = State::Escape,
            c if c.is_control() => {}
            // Cannot be part of a control sequence: the sequence ends here.
            c => {
                self.state = State::Ground;
                self.params.clear();
                self.ground(c, out);
            }
        }
    }
}

/// `text` made safe to print as one whole (see the module's doc).
pub fn clean(text: &str, colours: Colours) -> String {
    let mut sanitizer = Sanitizer::new(colours);
    let mut out = String::with_capacity(text.len());
    sanitizer.push(text, &mut out);
    sanitizer.finish(&mut out);
    out
}

/// `value` as one line of JSON with every control character escaped. serde_json escapes
/// U+0000–U+001F (ESC included) as JSON requires; this escapes DEL and the C1 controls
/// U+0080–U+009F too, which JSON allows raw but some terminals act on (U+009B is CSI).
pub fn json_line<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let mut out = Vec::new();
    value.serialize(&mut serde_json::Serializer::with_formatter(
        &mut out, EscapeC1,
    ))?;
    // The serializer writes UTF-8 only, so nothing is replaced here.
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// `value` as indented JSON (for people: `centaur tools call`), every control character
/// escaped as [`json_line`] escapes them.
pub fn json_pretty<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let pretty = serde_json::to_string_pretty(value)?;
    // Outside strings JSON is ASCII, so a DEL or C1 control can only be inside one, where its
    // escape means the same character.
    let mut out = String::with_capacity(pretty.len());
    for c in pretty.chars() {
        if ('\u{7f}'..='\u{9f}').contains(&c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// serde_json's compact output, with DEL and C1 controls in strings written as `\u00XX`.
struct EscapeC1;

impl serde_json::ser::Formatter for EscapeC1 {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut start = 0;
        for (at, c) in fragment.char_indices() {
            if ('\u{7f}'..='\u{9f}').contains(&c) {
                writer.write_all(&fragment.as_bytes()[start..at])?;
                write!(writer, "\\u{:04x}", u32::from(c))?;
                start = at + c.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(text: &str) -> String {
        clean(text, Colours::Drop)
    }

    fn tty(text: &str) -> String {
        clean(text, Colours::Keep)
    }

    /// No escape, C1 or C0 control but line feed and tab is left.
    fn assert_inert(text: &str) {
        assert!(
            !text
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t'),
            "{text:?}"
        );
    }

    #[test]
    fn pretty_json_escapes_c1_and_del_and_means_the_same() {
        let value = serde_json::json!({"a": "x\u{9b}31m\u{7f}\u{1b}[2J", "b": [1, 2]});
        let pretty = json_pretty(&value).unwrap();
        assert_inert(&pretty);
        assert!(pretty.contains("\\u009b"), "{pretty}");
        assert!(pretty.contains("\n  \"b\": ["), "{pretty}");
        let back: serde_json::Value = serde_json::from_str(&pretty).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn window_title_is_removed() {
        for colours in [Colours::Keep, Colours::Drop] {
            assert_eq!(clean("a\x1b]0;pwned\x07b", colours), "ab");
            assert_eq!(clean("a\x1b]2;pwned\x1b\\b", colours), "ab");
            assert_eq!(clean("a\u{9d}0;pwned\u{9c}b", colours), "ab");
        }
    }

    #[test]
    fn clearing_the_screen_and_moving_the_cursor_are_removed() {
        for colours in [Colours::Keep, Colours::Drop] {
            assert_eq!(
                clean("a\x1b[2Jb\x1b[Hc\x1b[3;4Hd\x1b[?1049he", colours),
                "abcde"
            );
            assert_eq!(clean("a\x1bcb\x1b7c\x1b8d", colours), "abcd");
            assert_eq!(clean("a\x1b(Bb\x1b#8c", colours), "abc");
        }
    }

    #[test]
    fn clipboard_writes_are_removed_with_either_terminator() {
        let payload = "c;cm0gLXJmIH4K";
        for colours in [Colours::Keep, Colours::Drop] {
            assert_eq!(clean(&format!("x\x1b]52;{payload}\x07y"), colours), "xy");
            assert_eq!(clean(&format!("x\x1b]52;{payload}\x1b\\y"), colours), "xy");
            assert_eq!(clean(&format!("x\u{9d}52;{payload}\u{9c}y"), colours), "xy");
        }
    }

    #[test]
    fn c1_csi_is_removed_whole() {
        assert_eq!(tty("a\u{9b}2Jb"), "ab");
        // Never a colour, even on a terminal: only the 7-bit form is kept.
        assert_eq!(tty("a\u{9b}31mb"), "ab");
        assert_eq!(plain("a\u{85}b\u{9c}c\u{80}d"), "abcd");
    }

    #[test]
    fn other_strings_are_removed() {
        assert_eq!(plain("a\x1bPq#0;2;0;0;0\x1b\\b"), "ab");
        assert_eq!(plain("a\x1b_Gf=24;AAAA\x1b\\b"), "ab");
        assert_eq!(plain("a\x1b^pm\x1b\\b\x1bXsos\x07c"), "abc");
        assert_eq!(
            plain("\x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\"),
            "link"
        );
    }

    #[test]
    fn an_unterminated_sequence_hides_only_itself() {
        // An OSC never ended: the line it is on is lost, the next line is not.
        assert_eq!(plain("a\x1b]0;pwned\nnext line\n"), "a\nnext line\n");
        assert_eq!(plain("a\x1b]52;c;AAAA"), "a");
        assert_eq!(plain("a\x1b[12"), "a");
        assert_eq!(plain("a\x1b"), "a");
        // A CSI cut by a character that cannot be in it ends there.
        assert_eq!(plain("a\x1b[12é and more"), "aé and more");
        // ESC starts a new sequence; CAN cancels one.
        assert_eq!(plain("a\x1b[12\x1b[2Jb"), "ab");
        assert_eq!(plain("a\x1b]0;t\x18b"), "ab");
        // ESC before a character that starts no sequence: the ESC alone goes.
        assert_eq!(plain("a\x1bé"), "aé");
    }

    #[test]
    fn colours_are_kept_on_a_terminal_and_dropped_otherwise() {
        let text = "\x1b[1;31merror\x1b[0m: \x1b[38;5;208mhot\x1b[m \x1b[38:2::1:2:3mrgb\x1b[0m";
        assert_eq!(tty(text), text);
        assert_eq!(plain(text), "error: hot rgb");
        // Not colours: private markers and intermediates (xterm's key modifiers), and
        // anything not ending in `m`.
        assert_eq!(tty("a\x1b[>4;2mb\x1b[?1mc\x1b[ md"), "abcd");
    }

    #[test]
    fn colours_left_on_are_reset_at_the_end() {
        assert_eq!(tty("\x1b[31mred"), "\x1b[31mred\x1b[0m");
        assert_eq!(tty("\x1b[31mred\x1b[0m"), "\x1b[31mred\x1b[0m");
        assert_eq!(plain("\x1b[31mred"), "red");
    }

    #[test]
    fn control_characters_go_and_line_breaks_and_tabs_stay() {
        assert_eq!(plain("a\x07b\x08c\x00d\x7fe\x0bf\x0cg"), "abcdefg");
        assert_eq!(plain("a\tb\nc"), "a\tb\nc");
    }

    #[test]
    fn carriage_returns_do_not_overwrite() {
        assert_eq!(plain("10%\r20%\r30%\n"), "10%\n20%\n30%\n");
        assert_eq!(plain("a\r\nb\r\r\nc\r"), "a\nb\nc\n");
        assert_eq!(plain("secret\r\x1b[Kshown"), "secret\nshown");
    }

    #[test]
    fn a_sequence_cut_between_pieces_is_still_removed() {
        let mut sanitizer = Sanitizer::new(Colours::Keep);
        let mut out = String::new();
        for piece in ["a\x1b", "]52;c;AA", "AA\x07b\x1b[", "31", "mc\r", "\nd"] {
            sanitizer.push(piece, &mut out);
        }
        sanitizer.finish(&mut out);
        assert_eq!(out, "ab\x1b[31mc\nd\x1b[0m");
    }

    #[test]
    fn every_input_comes_out_inert() {
        // Every pair of interesting characters, around text.
        let interesting = [
            "\x1b", "[", "]", "P", "\\", "\x07", "\r", "\n", "\u{9b}", "\u{9d}", "\u{9c}", "2",
            ";", "m", "J", "\x18", "?", "é",
        ];
        for a in interesting {
            for b in interesting {
                for c in interesting {
                    let text = format!("x{a}{b}{c}y");
                    assert_inert(&plain(&text));
                    let kept = tty(&text);
                    // On a terminal, only whole colour sequences may remain.
                    let mut rest = kept.clone();
                    while let Some(at) = rest.find("\x1b[") {
                        let end = at + rest[at..].find('m').expect("a whole sequence");
                        assert!(
                            rest[at + 2..end]
                                .chars()
                                .all(|p| p.is_ascii_digit() || p == ';' || p == ':'),
                            "{text:?} -> {kept:?}"
                        );
                        rest.replace_range(at..=end, "");
                    }
                    assert_inert(&rest);
                }
            }
        }
    }

    #[test]
    fn json_lines_escape_every_control_character() {
        let event = centaur_protocol::Event {
            event_id: 1,
            thread_key: centaur_protocol::ThreadKey::parse("api:t").expect("a key"),
            created_at: chrono::Utc::now(),
            execution_id: None,
            body: centaur_protocol::EventBody::CommandOutput {
                command_id: "c".into(),
                chunk: "\x1b]0;pwned\x07\x1b[2J\u{9b}2J\u{9d}52;c;AA\u{9c}\x7f é\n".into(),
                at: None,
            },
        };
        let line = json_line(&event).expect("serializable");
        assert_inert(&line);
        assert!(!line.contains('\n'), "{line}");
        // The same JSON as serde_json's own, once parsed.
        let parsed: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(parsed, serde_json::to_value(&event).expect("serializable"));
        assert!(line.contains(r"\u001b]0;pwned\u0007"), "{line}");
        assert!(line.contains(r"\u009b2J"), "{line}");
    }
}
