//! A minimal Server-Sent Events reader for the thread stream, shared by the runner and the
//! CLI: frames with their `id`, `event` and `data`; comments (keep-alives) skipped; lines split
//! across chunks and `\r\n` endings handled.

/// One event: its `id`, `event` type and `data`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Frame {
    pub id: Option<i64>,
    pub event: String,
    pub data: String,
}

/// Splits a byte stream into frames; comments (keep-alives) are skipped.
#[derive(Default)]
pub struct Parser {
    buffer: Vec<u8>,
    current: Frame,
    has_data: bool,
}

impl Parser {
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<Frame>) {
        self.buffer.extend_from_slice(chunk);
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let mut line = &line[..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            self.line(line, out);
        }
        if self.buffer.is_empty() && self.buffer.capacity() > 1 << 20 {
            self.buffer = Vec::new();
        }
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<Frame>) {
        if line.is_empty() {
            if self.has_data {
                out.push(std::mem::take(&mut self.current));
            }
            self.current = Frame::default();
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (text.as_ref(), ""),
        };
        match field {
            "id" => self.current.id = value.parse().ok(),
            "event" => self.current.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_chunks_and_comments_skipped() {
        let mut parser = Parser::default();
        let mut out = Vec::new();
        parser.push(b": keep-alive\n\nid: 7\nevent: approval.res", &mut out);
        assert!(out.is_empty());
        parser.push(
            b"olved\r\ndata: {\"a\":1}\n\nid: 8\nevent: x\ndata: one\ndata: two\n\n",
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                Frame {
                    id: Some(7),
                    event: "approval.resolved".into(),
                    data: "{\"a\":1}".into()
                },
                Frame {
                    id: Some(8),
                    event: "x".into(),
                    data: "one\ntwo".into()
                },
            ]
        );
    }
}
