//! Upgrades: WebSocket through interception, frames from upstream scrubbed, and what cannot be
//! scrubbed refused.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use centaur_proxy::Limits;
use centaur_proxy::audit::Decision;
use futures_util::StreamExt;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};

use crate::support::{
    Harness, REAL_KEY, intercept_policy, intercepting, openai_policy, raw_through, raw_upstream,
    tls_through, tls_upstream,
};

#[tokio::test]
async fn websocket_upgrades_pass_through_interception() {
    let (up, upstream_ca, _seen) = tls_upstream().await;
    let (mut h, proxy_ca) = intercepting(&upstream_ca).await;
    h.sandbox("sb1", intercept_policy(up));
    let tls = tls_through(h.tcp, "sb1:cred-sb1", up, &proxy_ca, &[b"http/1.1"]).await;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection.with_upgrades());
    let request = hyper::Request::get("/socket")
        .header("host", format!("127.0.0.1:{}", up.port()))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 101);
    let mut io = TokioIo::new(hyper::upgrade::on(response).await.unwrap());
    // The upstream echoes bytes as they come, so this frame goes unmasked, as a server's would:
    // the proxy reads what comes back as frames.
    let frame = ws_frame(OpCode::Data(Data::Text), true, false, b"frames both ways");
    io.write_all(&frame).await.unwrap();
    let mut buf = [0u8; 18];
    io.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf[..], frame[..]);
    drop(io);
    let record = h.next_audit().await;
    assert_eq!(
        (record.status, record.decision),
        (Some(101), Decision::Allowed)
    );
    assert_eq!((record.bytes_up, record.bytes_down), (18, 18));
}

/// One WebSocket frame as a server sends it (unmasked).
fn ws_frame(opcode: OpCode, is_final: bool, rsv1: bool, payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        is_final,
        rsv1,
        opcode,
        ..FrameHeader::default()
    };
    let mut frame = Vec::new();
    header.format(payload.len() as u64, &mut frame).unwrap();
    frame.extend_from_slice(payload);
    frame
}

/// A 101 answer to a WebSocket handshake with `extra` headers (each ending in CRLF), and the
/// frames that follow it.
fn switching(reason: &str, extra: &str, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut answer = format!(
        "HTTP/1.1 101 {reason}\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
         sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n{extra}\r\n"
    )
    .into_bytes();
    for frame in frames {
        answer.extend_from_slice(frame);
    }
    answer
}

/// The head of a WebSocket handshake through the proxy, offering compression.
fn websocket_request(up: SocketAddr, placeholder: &str, protocol: &str) -> String {
    format!(
        "GET http://{up}/socket HTTP/1.1\r\nHost: {up}\r\nAuthorization: Bearer {placeholder}\r\n\
         Connection: Upgrade\r\nUpgrade: {protocol}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    )
}

/// After a 101, what the upstream sends is read as WebSocket frames and the key is replaced in
/// every payload: text, binary (also across the proxy's reads), control frames, and a message
/// fragmented with the key split across its frames. The sandbox's offer of compression never
/// reaches the upstream.
#[tokio::test]
async fn websocket_frames_from_upstream_are_scrubbed() {
    let mut h = Harness::start(Limits::default()).await;
    let text = OpCode::Data(Data::Text);
    let mut large = vec![b'x'; 40_000];
    large[16_380..16_380 + REAL_KEY.len()].copy_from_slice(REAL_KEY.as_bytes());
    let (head, tail) = REAL_KEY.split_at(10);
    let frames = [
        ws_frame(text, true, false, format!("you sent {REAL_KEY}").as_bytes()),
        ws_frame(OpCode::Data(Data::Binary), true, false, &large),
        ws_frame(text, false, false, format!("split {head}").as_bytes()),
        ws_frame(
            OpCode::Control(Control::Ping),
            true,
            false,
            REAL_KEY.as_bytes(),
        ),
        ws_frame(OpCode::Data(Data::Continue), false, false, tail.as_bytes()),
        ws_frame(OpCode::Data(Data::Continue), true, false, b" across frames"),
        ws_frame(
            OpCode::Control(Control::Close),
            true,
            false,
            &[
                &1000u16.to_be_bytes()[..],
                format!("bye {REAL_KEY}").as_bytes(),
            ]
            .concat(),
        ),
    ];
    let (up, heads) = raw_upstream(switching(REAL_KEY, "", &frames)).await;
    let placeholder = h.sandbox("sb1", openai_policy(up))["OPENAI_API_KEY"].clone();
    let (stream, head) = raw_through(
        h.tcp,
        "sb1",
        &websocket_request(up, &placeholder, "websocket"),
    )
    .await;
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    assert!(!head.contains(REAL_KEY), "{head}");
    {
        let heads = heads.lock().unwrap();
        assert!(heads[0].contains(&format!("authorization: bearer {REAL_KEY}")));
        assert!(
            !heads[0].contains("sec-websocket-extensions"),
            "no compression offered upstream: {}",
            heads[0]
        );
    }

    let mut ws = WebSocketStream::from_raw_socket(stream, Role::Client, None).await;
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message in time")
            .expect("the stream is open")
            .expect("a valid message")
    };
    assert_eq!(
        next().await,
        Message::text(format!("you sent {placeholder}"))
    );
    let mut expected = large.clone();
    expected.splice(
        16_380..16_380 + REAL_KEY.len(),
        placeholder.bytes().collect::<Vec<_>>(),
    );
    assert_eq!(next().await, Message::binary(expected));
    assert_eq!(next().await, Message::Ping(placeholder.clone().into()));
    assert_eq!(
        next().await,
        Message::text(format!("split {placeholder} across frames"))
    );
    let Message::Close(Some(close)) = next().await else {
        panic!("a close frame");
    };
    assert_eq!(close.reason.as_str(), format!("bye {placeholder}"));
    drop(ws);

    let record = h.next_audit().await;
    assert_eq!(
        (record.status, record.decision),
        (Some(101), Decision::Allowed)
    );
}

/// What the proxy cannot scrub after a 101 is refused: an upstream that turns compression on
/// anyway, a protocol other than WebSocket on a host with bound credentials, and compressed
/// frames (which end the connection with a close frame saying why).
#[tokio::test]
async fn upgrades_the_proxy_cannot_scrub_are_refused() {
    let mut h = Harness::start(Limits::default()).await;
    for (case, answer, protocol) in [
        (
            "compression",
            switching("Switching Protocols", "sec-websocket-extensions: permessage-deflate\r\n", &[]),
            "websocket",
        ),
        (
            "another protocol",
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: raw-bytes\r\nconnection: upgrade\r\n\r\n"
                .to_vec(),
            "raw-bytes",
        ),
    ] {
        let (up, heads) = raw_upstream(answer).await;
        let placeholder = h.sandbox("sb1", openai_policy(up))["OPENAI_API_KEY"].clone();
        let (_stream, head) =
            raw_through(h.tcp, "sb1", &websocket_request(up, &placeholder, protocol)).await;
        assert!(head.starts_with("HTTP/1.1 502"), "{case}: {head}");
        assert!(head.contains("cannot check"), "{case}: {head}");
        assert_eq!(heads.lock().unwrap().len(), 1);
        assert_eq!(h.next_audit().await.decision, Decision::Denied, "{case}");
    }

    let compressed = ws_frame(OpCode::Data(Data::Text), true, true, REAL_KEY.as_bytes());
    let (up, _) = raw_upstream(switching("Switching Protocols", "", &[compressed])).await;
    let placeholder = h.sandbox("sb1", openai_policy(up))["OPENAI_API_KEY"].clone();
    let (stream, head) = raw_through(
        h.tcp,
        "sb1",
        &websocket_request(up, &placeholder, "websocket"),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut ws = WebSocketStream::from_raw_socket(stream, Role::Client, None).await;
    let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a message in time");
    let Some(Ok(Message::Close(Some(close)))) = message else {
        panic!("a close frame, not {message:?}");
    };
    assert_eq!(close.code, CloseCode::Policy);
    assert!(
        close.reason.as_str().contains("reserved bits"),
        "{}",
        close.reason.as_str()
    );
    drop(ws);
    let record = h.next_audit().await;
    assert_eq!(
        (record.status, record.decision),
        (Some(101), Decision::Denied)
    );
    assert!(
        record.reason.unwrap().contains("reserved bits"),
        "the refusal is audited"
    );
}
