//! Markdown into Slack's mrkdwn, and long text split within Slack's limits (never inside a code
//! block without closing and reopening it).
//!
//! mrkdwn differs from Markdown: `*bold*`, `_italic_`, `~strike~`, links `<url|text>`, no
//! headings (they become bold lines), lists as plain lines (`•`). Only `&`, `<` and `>` are
//! escaped, everywhere, code included (Slack reads them as control characters).

/// Characters in one message of an answer: under Slack's 4,000 for a message's `text` shown
/// whole (and well under the 40,000 at which it is cut), with room for a reopened code fence.
pub const MESSAGE_CHARS: usize = 3500;

const FENCE: &str = "```";

/// `text` with `&`, `<` and `>` escaped, as mrkdwn needs (nothing else is escaped).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            other => out.push(other),
        }
    }
    out
}

/// Markdown (as agents write it) as Slack mrkdwn.
pub fn to_mrkdwn(markdown: &str) -> String {
    let mut out = Vec::new();
    let mut in_code = false;
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with(FENCE) {
            // The language after an opening fence means nothing to Slack.
            out.push(FENCE.to_owned());
            in_code = !in_code;
            continue;
        }
        if in_code {
            out.push(escape(line));
            continue;
        }
        out.push(convert_line(line));
    }
    if in_code {
        out.push(FENCE.to_owned());
    }
    out.join("\n")
}

/// One line outside code blocks: headings, quotes, list items, then the inline marks.
fn convert_line(line: &str) -> String {
    let indent_len = line.len() - line.trim_start().len();
    let (indent, rest) = line.split_at(indent_len);
    if let Some(heading) = heading_text(rest) {
        return format!("*{}*", convert_inline(heading.trim_end_matches('#').trim()));
    }
    if let Some(quoted) = rest.strip_prefix('>') {
        return format!("> {}", convert_line(quoted.trim_start()));
    }
    if is_rule(rest) {
        return "──────────".to_owned();
    }
    for bullet in ["- ", "* ", "+ "] {
        if let Some(item) = rest.strip_prefix(bullet) {
            let item = item
                .strip_prefix("[ ] ")
                .map(|i| format!("☐ {i}"))
                .or_else(|| item.strip_prefix("[x] ").map(|i| format!("☑ {i}")))
                .unwrap_or_else(|| item.to_owned());
            return format!("{indent}• {}", convert_inline(&item));
        }
    }
    format!("{indent}{}", convert_inline(rest))
}

/// `# Title` → `Title` (one to six `#` and a space).
fn heading_text(line: &str) -> Option<&str> {
    let hashes = line.chars().take_while(|c| *c == '#').count();
    if (1..=6).contains(&hashes) {
        line[hashes..].strip_prefix(' ')
    } else {
        None
    }
}

fn is_rule(line: &str) -> bool {
    let line = line.trim();
    line.len() >= 3
        && ['-', '*', '_']
            .iter()
            .any(|m| line.chars().all(|c| c == *m || c == ' '))
}

/// Inline marks: code spans, links, bold, italics, strikethrough; everything else escaped.
fn convert_inline(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let rest = &chars[i..];
        if c == '`'
            && let Some(end) = find(&chars, i + 1, &['`'])
        {
            let code: String = chars[i + 1..end].iter().collect();
            out.push('`');
            out.push_str(&escape(&code));
            out.push('`');
            i = end + 1;
            continue;
        }
        if c == '['
            && let Some((label, url, next)) = link_at(&chars, i)
        {
            out.push_str(&format!(
                "<{}|{}>",
                link_target(&url),
                convert_inline(&label)
            ));
            i = next;
            continue;
        }
        if c == '<'
            && let Some(end) = find(&chars, i + 1, &['>'])
        {
            let inner: String = chars[i + 1..end].iter().collect();
            if is_url(&inner) {
                out.push_str(&format!("<{}>", link_target(&inner)));
                i = end + 1;
                continue;
            }
        }
        let mut taken = false;
        for (mark, slack) in [("**", '*'), ("__", '*'), ("~~", '~')] {
            let mark: Vec<char> = mark.chars().collect();
            if rest.starts_with(&mark)
                && let Some(end) = find(&chars, i + 2, &mark)
                && end > i + 2
            {
                let inner: String = chars[i + 2..end].iter().collect();
                out.push(slack);
                out.push_str(&convert_inline(&inner));
                out.push(slack);
                i = end + 2;
                taken = true;
                break;
            }
        }
        if taken {
            continue;
        }
        if (c == '*' || c == '_')
            && chars
                .get(i + 1)
                .is_some_and(|n| !n.is_whitespace() && *n != c)
            && (c == '*' || i == 0 || !chars[i - 1].is_alphanumeric())
            && let Some(end) = find(&chars, i + 1, &[c])
        {
            let closes_word = c == '*' || chars.get(end + 1).is_none_or(|n| !n.is_alphanumeric());
            if end > i + 1 && !chars[end - 1].is_whitespace() && closes_word {
                let inner: String = chars[i + 1..end].iter().collect();
                out.push('_');
                out.push_str(&convert_inline(&inner));
                out.push('_');
                i = end + 1;
                continue;
            }
        }
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            other => out.push(other),
        }
        i += 1;
    }
    out
}

/// The index where `mark` next starts at or after `from`.
fn find(chars: &[char], from: usize, mark: &[char]) -> Option<usize> {
    (from..chars.len()).find(|&j| chars[j..].starts_with(mark))
}

/// `[label](url)` at `start`: the label, the url and the index after it.
fn link_at(chars: &[char], start: usize) -> Option<(String, String, usize)> {
    let close = find(chars, start + 1, &[']'])?;
    if chars.get(close + 1) != Some(&'(') {
        return None;
    }
    let end = find(chars, close + 2, &[')'])?;
    let url: String = chars[close + 2..end].iter().collect();
    let url = url.split_whitespace().next()?.to_owned(); // drops a "title"
    if !is_url(&url) {
        return None;
    }
    Some((chars[start + 1..close].iter().collect(), url, end + 1))
}

/// A URL as the target of a mrkdwn link: `|` (which would start a label of the URL's own
/// choosing), `<` and `>` percent-encoded, `&` escaped.
fn link_target(url: &str) -> String {
    escape(
        &url.replace('|', "%7C")
            .replace('<', "%3C")
            .replace('>', "%3E"),
    )
}

/// `text` (Markdown sent as-is, like streamed progress) with Slack's special mentions and links
/// made inert: a word joiner after the `<` of `<!…>` (`<!channel>`, `<!here>`, `<!subteam^…>`),
/// `<@…>` (a user) and `<#…>` (a channel), so Slack shows them as text and notifies nobody.
pub fn neutralise_mentions(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '<' && chars.peek().is_some_and(|n| matches!(n, '!' | '@' | '#')) {
            out.push('\u{2060}');
        }
    }
    out
}

fn is_url(text: &str) -> bool {
    (text.starts_with("https://") || text.starts_with("http://") || text.starts_with("mailto:"))
        && !text.contains(char::is_whitespace)
}

/// `text` (mrkdwn) cut into messages of at most `max` characters, at line ends where it can. A
/// code block cut in two is closed at the end of one part and reopened at the start of the next,
/// so every part's fences balance.
pub fn split(text: &str, max: usize) -> Vec<String> {
    let max = max.max(FENCE.len() * 2 + 16);
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut current_len = 0; // in characters
    let mut in_code = false;
    // Room to close an open code block at a part's end: "\n```".
    let closing = FENCE.len() + 1;
    let mut lines: Vec<String> = Vec::new();
    for line in text.split('\n') {
        // A line too long for any part is cut into pieces that fit.
        let budget = max - closing - FENCE.len() - 2;
        let chars: Vec<char> = line.chars().collect();
        if chars.len() <= budget {
            lines.push(line.to_owned());
        } else {
            lines.extend(chars.chunks(budget).map(|c| c.iter().collect()));
        }
    }
    for line in lines {
        let line_len = line.chars().count();
        let is_fence = line.trim_start().starts_with(FENCE);
        let separator = usize::from(!current.is_empty());
        let reserve = if in_code || is_fence { closing } else { 0 };
        if current_len + separator + line_len + reserve > max && !current.trim().is_empty() {
            if in_code {
                current.push('\n');
                current.push_str(FENCE);
            }
            parts.push(std::mem::take(&mut current));
            current_len = 0;
            if in_code {
                current.push_str(FENCE);
                current_len = FENCE.len();
            }
        }
        if !current.is_empty() {
            current.push('\n');
            current_len += 1;
        }
        current.push_str(&line);
        current_len += line_len;
        if is_fence {
            in_code = !in_code;
        }
    }
    if in_code {
        current.push('\n');
        current.push_str(FENCE);
    }
    if !current.trim().is_empty() {
        parts.push(current);
    }
    parts
}

/// `text` cut to at most `max` characters, with `…` when something was cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The last `max` characters of `text`, with `…` in front when something was cut.
pub fn tail(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_owned();
    }
    let mut out = String::from("…");
    out.extend(text.chars().skip(count - max.saturating_sub(1)));
    out
}

/// Text as one mrkdwn code block (fences inside it broken up, so it stays one block).
pub fn code_block(text: &str) -> String {
    let mut body = escape(text.trim_end_matches('\n'));
    // Again until none is left: a run of backticks ("``````") leaves a fence across the
    // places the first pass broke.
    while body.contains(FENCE) {
        body = body.replace(FENCE, "`\u{200b}``");
    }
    format!("{FENCE}\n{body}\n{FENCE}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fences(part: &str) -> usize {
        part.lines()
            .filter(|l| l.trim_start().starts_with(FENCE))
            .count()
    }

    #[test]
    fn inline_marks_become_mrkdwn() {
        assert_eq!(to_mrkdwn("**bold** and __also__"), "*bold* and *also*");
        assert_eq!(to_mrkdwn("*it* and _it_"), "_it_ and _it_");
        assert_eq!(to_mrkdwn("~~gone~~"), "~gone~");
        assert_eq!(to_mrkdwn("run `a < b && c`"), "run `a &lt; b &amp;&amp; c`");
        assert_eq!(
            to_mrkdwn("see [the docs](https://example.com/a?b=1&c=2)"),
            "see <https://example.com/a?b=1&amp;c=2|the docs>"
        );
        assert_eq!(to_mrkdwn("<https://example.com>"), "<https://example.com>");
        assert_eq!(to_mrkdwn("**[x](https://e.com)**"), "*<https://e.com|x>*");
    }

    #[test]
    fn only_ampersand_and_angle_brackets_are_escaped() {
        assert_eq!(
            to_mrkdwn("a < b > c & d * e _ f snake_case_name 2*3"),
            "a &lt; b &gt; c &amp; d * e _ f snake_case_name 2*3"
        );
        assert_eq!(to_mrkdwn("<@U123> <!here>"), "&lt;@U123&gt; &lt;!here&gt;");
    }

    #[test]
    fn a_url_cannot_choose_its_own_label() {
        assert_eq!(
            to_mrkdwn("[a](https://x.example|Trusted)"),
            "<https://x.example%7CTrusted|a>"
        );
        assert_eq!(
            to_mrkdwn("<https://x.example|Trusted>"),
            "<https://x.example%7CTrusted>"
        );
        assert_eq!(
            to_mrkdwn("[a](https://x.example/>b)"),
            "<https://x.example/%3Eb|a>"
        );
    }

    #[test]
    fn mentions_in_raw_markdown_notify_nobody() {
        assert_eq!(
            neutralise_mentions("hi <!channel> <!here> <@U123> <#C1> <!subteam^S1>"),
            "hi <\u{2060}!channel> <\u{2060}!here> <\u{2060}@U123> <\u{2060}#C1> <\u{2060}!subteam^S1>"
        );
        assert_eq!(
            neutralise_mentions("a < b <https://e.com>"),
            "a < b <https://e.com>"
        );
        // Progress shown on the control message goes through mrkdwn, which escapes them.
        assert_eq!(
            to_mrkdwn("```\n<!channel>\n```\n<@U1>"),
            "```\n&lt;!channel&gt;\n```\n&lt;@U1&gt;"
        );
    }

    #[test]
    fn headings_lists_and_quotes() {
        assert_eq!(to_mrkdwn("# Title\n## Sub **x** ##"), "*Title*\n*Sub *x**");
        assert_eq!(
            to_mrkdwn("- one\n* two\n  + nested\n1. first"),
            "• one\n• two\n  • nested\n1. first"
        );
        assert_eq!(to_mrkdwn("- [ ] todo\n- [x] done"), "• ☐ todo\n• ☑ done");
        assert_eq!(to_mrkdwn("> quoted **b**"), "> quoted *b*");
        assert_eq!(to_mrkdwn("---"), "──────────");
    }

    #[test]
    fn code_blocks_keep_their_text_and_lose_their_language() {
        let md = "```rust\nlet a = **b** < c;\n```\nafter";
        assert_eq!(to_mrkdwn(md), "```\nlet a = **b** &lt; c;\n```\nafter");
        // An unclosed block is closed.
        assert_eq!(to_mrkdwn("```\nx"), "```\nx\n```");
    }

    #[test]
    fn short_text_is_one_part() {
        assert_eq!(split("hello\nworld", 100), vec!["hello\nworld"]);
        assert!(split("", 100).is_empty());
    }

    #[test]
    fn parts_stay_within_the_limit_and_cut_at_line_ends() {
        let text: String = (0..200).map(|i| format!("line number {i}\n")).collect();
        let parts = split(&text, 300);
        assert!(parts.len() > 5);
        for part in &parts {
            assert!(part.chars().count() <= 300, "{}", part.len());
            assert!(part.starts_with("line number"));
        }
        let joined = parts.join("\n");
        assert_eq!(joined.trim_end(), text.trim_end());
    }

    #[test]
    fn a_code_block_cut_in_two_is_closed_and_reopened() {
        let code: String = (0..100).map(|i| format!("let x{i} = {i};\n")).collect();
        let text = format!("Intro\n```\n{code}```\nOutro");
        let parts = split(&text, 400);
        assert!(parts.len() > 3);
        for part in &parts {
            assert!(part.chars().count() <= 400);
            assert_eq!(fences(part) % 2, 0, "unbalanced fences in {part:?}");
        }
        assert!(parts[1].starts_with("```\nlet x"));
        assert!(parts.last().unwrap().ends_with("Outro"));
        // Nothing lost: every line of code is in some part.
        for i in 0..100 {
            assert!(
                parts
                    .iter()
                    .any(|p| p.contains(&format!("let x{i} = {i};")))
            );
        }
    }

    #[test]
    fn a_line_longer_than_a_part_is_cut() {
        let long = "x".repeat(1000);
        let parts = split(&format!("```\n{long}\n```"), 300);
        for part in &parts {
            assert!(part.chars().count() <= 300);
            assert_eq!(fences(part) % 2, 0);
        }
        let xs: usize = parts.iter().map(|p| p.matches('x').count()).sum();
        assert_eq!(xs, 1000);
    }

    #[test]
    fn multibyte_text_is_counted_in_characters() {
        let text = "é".repeat(1000);
        let parts = split(&text, 300);
        assert!(parts.iter().all(|p| p.chars().count() <= 300));
        assert_eq!(parts.concat().chars().count(), 1000);
    }

    #[test]
    fn code_blocks_and_cuts() {
        assert_eq!(code_block("a<b\n"), "```\na&lt;b\n```");
        assert_eq!(fences(&code_block("x\n```\ny")), 2);
        assert_eq!(code_block(&"`".repeat(12)).matches(FENCE).count(), 2);
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(tail("abcdef", 4), "…def");
        assert_eq!(tail("abc", 4), "abc");
    }
}
