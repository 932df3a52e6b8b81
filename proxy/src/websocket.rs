//! WebSocket frames from an upstream, scrubbed on their way to the sandbox.
//!
//! After a `101`, an upstream with bound credentials could echo a real value inside a frame.
//! [`ScrubbedFrames`] sits on the upstream side of the relay: it reads what the upstream sends
//! as frames (with tungstenite's frame codec), replaces echoed values in every payload, and
//! writes each frame again with its new length. A data message goes through one streaming
//! [`Scrubber`] from its first frame to its last, so a value split across continuation frames,
//! or across the proxy's reads of one large frame, is still caught, and no message is ever
//! buffered whole. What comes out may be fragmented differently from what came in, which RFC
//! 6455 allows an intermediary when no extension is in use. The proxy makes sure none is: it
//! strips `Sec-WebSocket-Extensions` from the handshake and refuses an upstream that turns one
//! on ([`check_upgrade`]), since a compressed frame could not be checked.
//!
//! Frames from the sandbox to the upstream pass as they are: they can carry placeholders at
//! most, which are worthless outside the proxy.
//!
//! A frame the proxy cannot read (reserved bits set, masked, malformed, out of order) ends the
//! connection: the sandbox gets a close frame (1008, policy) that says why.

use std::io::Cursor;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use hyper::header::{self, HeaderMap};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use crate::credentials::Scrubber;

/// The largest payload a control frame may have.
const MAX_CONTROL_PAYLOAD: usize = 125;
/// The close code that tells the sandbox the proxy ended the connection by policy.
const CLOSE_POLICY: u16 = 1008;
/// How much the proxy reads from the upstream at a time.
const READ_SIZE: usize = 16 * 1024;

/// Why the proxy ended an upgraded connection. Short enough for a close frame's reason.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error(
        "upstream frame has reserved bits set (compressed?); the proxy cannot check it for credentials"
    )]
    Reserved,
    #[error("upstream frame has a reserved opcode")]
    Opcode,
    #[error("upstream frame is masked, which servers may not do")]
    Masked,
    #[error("upstream frame is malformed: {0}")]
    Malformed(tungstenite::Error),
    #[error("upstream continued a message it had not begun")]
    Continuation,
    #[error("upstream began a message before ending the last one")]
    Interleaved,
    #[error("upstream control frame is fragmented or over 125 bytes")]
    Control,
    #[error("cannot write a frame: {0}")]
    Encode(tungstenite::Error),
}

/// Why the proxy refuses a `101` from an upstream whose frames it must scrub.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("switched to `{0}`, a protocol the proxy cannot check for credentials")]
    Protocol(String),
    #[error(
        "turned on WebSocket extensions (`{0}`) that were not offered; the proxy cannot check compressed frames for credentials"
    )]
    Extensions(String),
}

/// Checks a `101` before its frames are scrubbed: the upstream must have switched to plain
/// WebSocket, with no extension (the proxy offered none).
pub fn check_upgrade(headers: &HeaderMap) -> Result<(), UpgradeError> {
    let joined = |name| {
        headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let protocol = joined(header::UPGRADE);
    if !protocol.eq_ignore_ascii_case("websocket") {
        return Err(UpgradeError::Protocol(protocol));
    }
    let extensions = joined(header::SEC_WEBSOCKET_EXTENSIONS);
    if !extensions.is_empty() {
        return Err(UpgradeError::Extensions(extensions));
    }
    Ok(())
}

/// Reads an upstream's bytes as WebSocket frames and writes them again, scrubbed. Knows nothing
/// of sockets: [`FrameScrubber::push`] takes what was read and returns what to send.
pub struct FrameScrubber {
    scrubber: Scrubber,
    /// Bytes read and not used yet: at most a frame header, a control frame, or one read.
    input: BytesMut,
    /// The frame being read, and how much of its payload is still to come.
    frame: Option<(FrameHeader, u64)>,
    /// The data message in progress: its kind, and whether a frame of it has gone out.
    message: Option<(Data, bool)>,
}

impl FrameScrubber {
    pub fn new(scrubber: Scrubber) -> Self {
        FrameScrubber {
            scrubber,
            input: BytesMut::new(),
            frame: None,
            message: None,
        }
    }

    /// Takes bytes from the upstream; returns the scrubbed frames, whole or in part, that can go
    /// to the sandbox now.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<u8>, FrameError> {
        self.input.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            let (header, remaining) = match self.frame.take() {
                Some(frame) => frame,
                None => match self.next_header()? {
                    Some(frame) => frame,
                    None => return Ok(out),
                },
            };
            let remaining = match header.opcode {
                OpCode::Control(_) => self.control_frame(&header, remaining, &mut out)?,
                OpCode::Data(_) => self.data_frame(&header, remaining, &mut out)?,
            };
            if remaining > 0 {
                // The rest of this frame is still to come.
                self.frame = Some((header, remaining));
                return Ok(out);
            }
        }
    }

    /// The next frame's header and payload length, once all of the header has arrived; checks
    /// that the proxy can read the frame and that it fits the message in progress.
    fn next_header(&mut self) -> Result<Option<(FrameHeader, u64)>, FrameError> {
        let mut cursor = Cursor::new(&self.input[..]);
        let Some((header, length)) =
            FrameHeader::parse(&mut cursor).map_err(FrameError::Malformed)?
        else {
            return Ok(None);
        };
        let used = cursor.position() as usize;
        self.input.advance(used);
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(FrameError::Reserved);
        }
        if header.mask.is_some() {
            return Err(FrameError::Masked);
        }
        match header.opcode {
            OpCode::Data(Data::Text | Data::Binary) if self.message.is_some() => {
                return Err(FrameError::Interleaved);
            }
            OpCode::Data(kind @ (Data::Text | Data::Binary)) => self.message = Some((kind, false)),
            OpCode::Data(Data::Continue) if self.message.is_none() => {
                return Err(FrameError::Continuation);
            }
            OpCode::Data(Data::Continue) => {}
            OpCode::Control(Control::Close | Control::Ping | Control::Pong) => {
                if !header.is_final || length > MAX_CONTROL_PAYLOAD as u64 {
                    return Err(FrameError::Control);
                }
            }
            OpCode::Data(Data::Reserved(_)) | OpCode::Control(Control::Reserved(_)) => {
                return Err(FrameError::Opcode);
            }
        }
        Ok(Some((header, length)))
    }

    /// A control frame goes out whole, scrubbed on its own, once all of it has arrived; returns
    /// how much of it is still to come (all of it, or nothing).
    fn control_frame(
        &mut self,
        header: &FrameHeader,
        length: u64,
        out: &mut Vec<u8>,
    ) -> Result<u64, FrameError> {
        let length = length as usize; // At most 125: checked with the header.
        if self.input.len() < length {
            return Ok(length as u64);
        }
        let payload = self.input.split_to(length);
        let scrubbed = fit_control(header.opcode, self.scrubber.scrub_whole(&payload));
        write_frame(out, true, header.opcode, &scrubbed)?;
        Ok(0)
    }

    /// Scrubs what has arrived of a data frame's payload and sends it on as a frame of the same
    /// message (the scrubber holds back a possible start of a value until the next piece); the
    /// message's last frame also takes what was held back. Returns how much is still to come.
    fn data_frame(
        &mut self,
        header: &FrameHeader,
        remaining: u64,
        out: &mut Vec<u8>,
    ) -> Result<u64, FrameError> {
        let available = remaining.min(self.input.len() as u64) as usize;
        let piece = self.input.split_to(available);
        let remaining = remaining - available as u64;
        let mut payload = self.scrubber.push(&piece);
        let ends_message = remaining == 0 && header.is_final;
        if ends_message {
            payload.extend(self.scrubber.finish());
        }
        if let Some((kind, started)) = &mut self.message
            && (ends_message || !payload.is_empty())
        {
            let opcode = if *started { Data::Continue } else { *kind };
            write_frame(out, ends_message, OpCode::Data(opcode), &payload)?;
            *started = true;
        }
        if ends_message {
            self.message = None;
        }
        Ok(remaining)
    }
}

/// Appends an unmasked frame, as a server sends it, with no reserved bit set.
fn write_frame(
    out: &mut Vec<u8>,
    is_final: bool,
    opcode: OpCode,
    payload: &[u8],
) -> Result<(), FrameError> {
    let header = FrameHeader {
        is_final,
        opcode,
        ..FrameHeader::default()
    };
    header
        .format(payload.len() as u64, out)
        .map_err(FrameError::Encode)?;
    out.extend_from_slice(payload);
    Ok(())
}

/// A control frame's payload cut to the 125 bytes it may hold (a placeholder can be longer than
/// the value it replaced); a close reason is cut where a character begins.
fn fit_control(opcode: OpCode, mut payload: Vec<u8>) -> Vec<u8> {
    let mut end = payload.len().min(MAX_CONTROL_PAYLOAD);
    if opcode == OpCode::Control(Control::Close) {
        while end > 2 && end < payload.len() && payload[end] & 0xC0 == 0x80 {
            end -= 1;
        }
    }
    payload.truncate(end);
    payload
}

/// The close frame that tells the sandbox why the proxy ended the connection.
fn close_frame(reason: &str) -> Vec<u8> {
    let close = OpCode::Control(Control::Close);
    let mut payload = CLOSE_POLICY.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    let mut out = Vec::new();
    match write_frame(&mut out, true, close, &fit_control(close, payload)) {
        Ok(()) => out,
        // The connection then just ends.
        Err(_) => Vec::new(),
    }
}

/// The upstream side of an upgraded connection, read as scrubbed frames; writes pass through.
/// When the proxy ends the connection, the sandbox reads a close frame and then the end.
pub struct ScrubbedFrames<S> {
    inner: S,
    frames: FrameScrubber,
    /// Scrubbed bytes for the sandbox, handed out from `sent` on.
    pending: Vec<u8>,
    sent: usize,
    /// The upstream has closed, or the proxy has ended the connection.
    ended: bool,
    scratch: Box<[u8]>,
    refusal: Arc<OnceLock<String>>,
}

impl<S> ScrubbedFrames<S> {
    pub fn new(inner: S, scrubber: Scrubber) -> Self {
        ScrubbedFrames {
            inner,
            frames: FrameScrubber::new(scrubber),
            pending: Vec::new(),
            sent: 0,
            ended: false,
            scratch: vec![0; READ_SIZE].into_boxed_slice(),
            refusal: Arc::default(),
        }
    }

    /// Where the reason appears if the proxy ends the connection (for the audit record).
    pub fn refusal(&self) -> Arc<OnceLock<String>> {
        self.refusal.clone()
    }

    /// Scrubs what was read from the upstream into `pending`; a frame the proxy cannot read
    /// ends the connection with a close frame instead.
    fn take_in(&mut self, read: usize) {
        self.sent = 0;
        self.pending = match self.frames.push(&self.scratch[..read]) {
            Ok(out) => out,
            Err(error) => {
                tracing::warn!(%error, "ended a WebSocket connection the proxy cannot scrub");
                let reason = error.to_string();
                self.ended = true;
                let close = close_frame(&reason);
                let _ = self.refusal.set(reason);
                close
            }
        };
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ScrubbedFrames<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.sent < this.pending.len() || buf.remaining() == 0 {
                let n = buf.remaining().min(this.pending.len() - this.sent);
                buf.put_slice(&this.pending[this.sent..this.sent + n]);
                this.sent += n;
                return Poll::Ready(Ok(()));
            }
            if this.ended {
                return Poll::Ready(Ok(()));
            }
            let mut raw = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut raw))?;
            let read = raw.filled().len();
            if read == 0 {
                this.ended = true;
            } else {
                this.take_in(read);
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ScrubbedFrames<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::{Credential, SecretBinding, placeholder};

    const VALUE: &str = "sk-real-0123456789abcdef";

    fn scrubber() -> (Scrubber, String) {
        let credential = Credential {
            binding: SecretBinding {
                name: "KEY".into(),
                hosts: vec!["a.example".parse().unwrap()],
                headers: vec!["authorization".into()],
                query_param: None,
                format: None,
            },
            placeholder: placeholder(b"k", "sb1", "KEY"),
            value: VALUE.into(),
        };
        let placeholder = credential.placeholder.clone();
        (Scrubber::new(&[credential]), placeholder)
    }

    fn frame(opcode: OpCode, is_final: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame(&mut out, is_final, opcode, payload).unwrap();
        out
    }

    /// Reads frames back: each message (kind and payload) and each control frame, in order,
    /// checking that fragments follow the rules.
    fn messages(mut bytes: &[u8]) -> Vec<(OpCode, Vec<u8>)> {
        let mut found = Vec::new();
        let mut message: Option<(OpCode, Vec<u8>)> = None;
        while !bytes.is_empty() {
            let mut cursor = Cursor::new(bytes);
            let (header, length) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            let start = cursor.position() as usize;
            let payload = bytes[start..start + length as usize].to_vec();
            bytes = &bytes[start + length as usize..];
            assert!(!header.rsv1 && header.mask.is_none());
            match header.opcode {
                OpCode::Control(_) => found.push((header.opcode, payload)),
                OpCode::Data(Data::Continue) => message
                    .as_mut()
                    .expect("a message to continue")
                    .1
                    .extend(payload),
                opcode @ OpCode::Data(_) => {
                    assert!(message.is_none(), "a message began inside another");
                    message = Some((opcode, payload));
                }
            }
            if header.is_final
                && matches!(header.opcode, OpCode::Data(_))
                && let Some(done) = message.take()
            {
                found.push(done);
            }
        }
        assert!(message.is_none(), "a message left unfinished");
        found
    }

    #[test]
    fn values_are_replaced_in_every_frame_however_the_bytes_arrive() {
        let text = OpCode::Data(Data::Text);
        let ping = OpCode::Control(Control::Ping);
        let (head, tail) = VALUE.split_at(7);
        let stream = [
            frame(text, true, format!("a {VALUE} b").as_bytes()),
            frame(OpCode::Data(Data::Binary), false, head.as_bytes()),
            frame(ping, true, VALUE.as_bytes()),
            frame(OpCode::Data(Data::Continue), false, b""),
            frame(OpCode::Data(Data::Continue), true, tail.as_bytes()),
        ]
        .concat();
        let (_, placeholder) = scrubber();
        let expected = vec![
            (text, format!("a {placeholder} b").into_bytes()),
            (ping, placeholder.clone().into_bytes()),
            (OpCode::Data(Data::Binary), placeholder.clone().into_bytes()),
        ];
        for step in [1, 2, 3, 5, 7, 64, stream.len()] {
            let mut frames = FrameScrubber::new(scrubber().0);
            let mut out = Vec::new();
            for piece in stream.chunks(step) {
                out.extend(frames.push(piece).unwrap());
            }
            assert_eq!(messages(&out), expected, "read {step} bytes at a time");
        }
    }

    #[test]
    fn control_payloads_stay_within_125_bytes() {
        let close = OpCode::Control(Control::Close);
        // A close code and a reason holding the value: with the (longer) placeholder in, the
        // payload would be 126 bytes, the last two an `é`.
        let reason = format!("{VALUE}{}é", "x".repeat(78));
        let payload = [&1000u16.to_be_bytes()[..], reason.as_bytes()].concat();
        let mut frames = FrameScrubber::new(scrubber().0);
        let out = messages(&frames.push(&frame(close, true, &payload)).unwrap());
        let (_, payload) = &out[0];
        assert_eq!(payload.len(), 124, "cut before the `é`, not inside it");
        let reason = std::str::from_utf8(&payload[2..]).unwrap();
        assert!(
            reason.starts_with(&scrubber().1) && reason.ends_with('x'),
            "{reason}"
        );
    }

    #[test]
    fn frames_the_proxy_cannot_read_are_refused() {
        let text = OpCode::Data(Data::Text);
        let mut compressed = frame(text, true, b"deflated");
        compressed[0] |= 0x40;
        let masked = {
            let header = FrameHeader {
                mask: Some([1, 2, 3, 4]),
                ..FrameHeader::default()
            };
            let mut out = Vec::new();
            header.format(0, &mut out).unwrap();
            out
        };
        let cases = [
            (compressed, "reserved bits"),
            (masked, "masked"),
            (
                frame(OpCode::Data(Data::Continue), true, b"x"),
                "had not begun",
            ),
            (
                [frame(text, false, b"x"), frame(text, true, b"y")].concat(),
                "before ending",
            ),
            (
                frame(OpCode::Control(Control::Ping), false, b"x"),
                "fragmented",
            ),
            (vec![0x83, 0x00], "malformed"),
        ];
        for (bytes, expected) in cases {
            let error = FrameScrubber::new(scrubber().0).push(&bytes).unwrap_err();
            assert!(error.to_string().contains(expected), "{error}");
            assert!(
                error.to_string().len() <= MAX_CONTROL_PAYLOAD - 2,
                "{error}"
            );
        }
        let close = messages(&close_frame(&FrameError::Reserved.to_string()));
        assert_eq!(&close[0].1[..2], &CLOSE_POLICY.to_be_bytes());
    }

    #[test]
    fn upgrades_other_than_plain_websocket_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, "WebSocket".parse().unwrap());
        assert!(check_upgrade(&headers).is_ok());
        headers.insert(
            header::SEC_WEBSOCKET_EXTENSIONS,
            "permessage-deflate".parse().unwrap(),
        );
        assert!(matches!(
            check_upgrade(&headers),
            Err(UpgradeError::Extensions(e)) if e == "permessage-deflate"
        ));
        headers.insert(header::UPGRADE, "h2c".parse().unwrap());
        assert!(matches!(check_upgrade(&headers), Err(UpgradeError::Protocol(p)) if p == "h2c"));
    }
}
