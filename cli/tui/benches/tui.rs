//! The TUI's figures:
//!
//! - a frame of a 10,000-event transcript: the first (everything laid out) and the frames
//!   while an answer streams in (one block changes), and the memory the transcript takes;
//! - from an event written on the socket to its text leaving the TUI for the terminal.
//!
//! `centaur tui`'s start to its first frame is the `centaur` crate's `startup` benchmark.
//!
//!     cargo bench -p centaur-tui --bench tui
#![allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm)] // tests and benchmarks stop at the first surprise

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use centaur_client::Client;
use centaur_protocol::ThreadKey;
use centaur_test_support::measure::{ms, percentile};
use centaur_test_support::script::{Script, long_thread};
use centaur_test_support::tui::app_following;
use centaur_tui::app::{App, AppEvent, Scroll, Scrolls, Start};
use centaur_tui::{Runtime, View, event_loop, highlight};
use ratatui::backend::{CrosstermBackend, TestBackend};
use ratatui::{Terminal, TerminalOptions, Viewport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() {
    let started = Instant::now();
    highlight::load_now();
    println!(
        "code grammars loaded and warmed (on a background thread while the TUI starts): {}",
        ms(started.elapsed())
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    frames();
    runtime.block_on(event_to_screen());
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn frames() {
    let events = long_thread(10_000);
    let key = events[0].thread_key.clone();
    let before = rss_kib();
    let started = Instant::now();
    let mut app = app_following(&events);
    let applied = started.elapsed();
    let mut terminal = Terminal::new(TestBackend::new(160, 48)).unwrap();
    let now = chrono::Utc::now();
    let mut view = View::default();
    let started = Instant::now();
    terminal.draw(|frame| view.draw(frame, &app, now)).unwrap();
    let first = started.elapsed();
    let memory_mib = rss_kib().saturating_sub(before) as f64 / 1024.0;
    // The same thread opened again in this process: what opening costs once the process is warm.
    let again = app_following(&events);
    let mut second_terminal = Terminal::new(TestBackend::new(160, 48)).unwrap();
    let mut second_view = View::default();
    let started = Instant::now();
    second_terminal
        .draw(|frame| second_view.draw(frame, &again, now))
        .unwrap();
    let second = started.elapsed();

    // An answer streaming into the end of the long thread: one event, one frame.
    let mut script = Script::for_thread(key.as_ref());
    for _ in 0..events.len() {
        script.push(centaur_protocol::EventBody::ExecutionQueued {});
    }
    script.user("and now?");
    let mut streaming = Vec::new();
    for i in 0..2000 {
        script.delta(if i % 40 == 39 { "\n\n" } else { "word " });
        let event = script.events().last().unwrap().clone();
        let started = Instant::now();
        app.handle(AppEvent::Server(Box::new(event)));
        view.scroll(app.take_scrolls());
        terminal.draw(|frame| view.draw(frame, &app, now)).unwrap();
        streaming.push(started.elapsed());
    }
    // Scrolled to the middle of the thread.
    app.handle(AppEvent::Key(ratatui::crossterm::event::KeyEvent::new(
        ratatui::crossterm::event::KeyCode::PageUp,
        ratatui::crossterm::event::KeyModifiers::NONE,
    )));
    view.scroll(app.take_scrolls());
    view.scroll(Some(Scrolls {
        thread: app.thread.as_ref().unwrap().serial,
        moves: vec![Scroll::Bottom, Scroll::Up(60_000)],
    }));
    let mut scrolled = Vec::new();
    for _ in 0..500 {
        let started = Instant::now();
        terminal.draw(|frame| view.draw(frame, &app, now)).unwrap();
        scrolled.push(started.elapsed());
    }
    println!("render, 10,000-event transcript at 160x48:");
    println!("  applying the events:        {}", ms(applied));
    println!("  first frame:                {}", ms(first));
    println!("  first frame, warm process:  {}", ms(second));
    println!(
        "  streaming frame p50 / p99:  {} / {}",
        ms(percentile(&mut streaming, 0.5)),
        ms(percentile(&mut streaming, 0.99))
    );
    println!(
        "  scrolled frame p50 / p99:   {} / {}",
        ms(percentile(&mut scrolled, 0.5)),
        ms(percentile(&mut scrolled, 0.99))
    );
    println!(
        "  memory for the transcript and its drawn lines: {memory_mib:.1} MiB (RSS growth; process RSS {:.1} MiB)",
        rss_kib() as f64 / 1024.0
    );
}

/// What the TUI writes to the terminal, shared with the benchmark.
#[derive(Clone, Default)]
struct Tty(Arc<Mutex<Vec<u8>>>);

impl Write for Tty {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A fake server whose event stream sends one whole agent message every 10 ms, noting when
/// each was written to the socket.
async fn event_server(count: usize, sent: Arc<Mutex<Vec<Option<Instant>>>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            request.extend_from_slice(&buf[..n]);
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n")
            .await
            .unwrap();
        for id in 1..=count {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let event = centaur_protocol::Event {
                event_id: id as i64,
                thread_key: ThreadKey::parse("api:bench").unwrap(),
                created_at: "2026-11-22T10:00:00Z".parse().unwrap(),
                execution_id: None,
                body: centaur_protocol::EventBody::AgentMessage {
                    text: format!("marker{id:05}"),
                },
            };
            let event = serde_json::to_string(&event).unwrap();
            let frame = format!("id: {id}\nevent: agent.message\ndata: {event}\n\n");
            sent.lock().unwrap()[id] = Some(Instant::now());
            stream.write_all(frame.as_bytes()).await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    url
}

async fn event_to_screen() {
    let count = 300;
    let sent = Arc::new(Mutex::new(vec![None; count + 1]));
    let url = event_server(count, sent.clone()).await;
    let client = Client::new(url.clone(), "token".into());
    let key = ThreadKey::parse("api:bench").unwrap();
    let (bus, mut inbox) = tokio::sync::mpsc::unbounded_channel();
    let (mut app, _) = App::new(
        url,
        &Start {
            thread_key: Some(key.clone()),
            ..Start::default()
        },
    );
    let mut runtime = Runtime::new(client, bus.clone());
    runtime.run(centaur_tui::Effect::Follow(key));
    let tty = Tty::default();
    let mut terminal = Terminal::with_options(
        CrosstermBackend::new(tty.clone()),
        TerminalOptions {
            viewport: Viewport::Fixed(ratatui::layout::Rect::new(0, 0, 120, 40)),
        },
    )
    .unwrap();
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(0usize));
    let (lat, seen_in) = (latencies.clone(), seen.clone());
    // The screen as a terminal shows it, from what the TUI wrote.
    let mut screen = vt100::Parser::new(
        std::num::NonZero::new(40).unwrap(),
        std::num::NonZero::new(120).unwrap(),
        0,
    );
    let loop_done = event_loop(
        &mut terminal,
        &mut app,
        &mut runtime,
        &mut inbox,
        move |_| {
            let written = std::mem::take(&mut *tty.0.lock().unwrap());
            let now = Instant::now();
            screen.process(&written);
            let contents = screen.screen().contents();
            let newest = contents
                .match_indices("marker")
                .filter_map(|(at, _)| contents.get(at + 6..at + 11)?.parse::<usize>().ok())
                .max();
            let mut seen = seen_in.lock().unwrap();
            if let Some(newest) = newest.filter(|n| *n > *seen) {
                let sent = sent.lock().unwrap();
                let mut lat = lat.lock().unwrap();
                for id in *seen + 1..=newest {
                    if let Some(at) = sent[id] {
                        lat.push(now - at);
                    }
                }
                *seen = newest;
            }
        },
    );
    let stop = async {
        while *seen.lock().unwrap() < count {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        _ = loop_done => panic!("the loop ended"),
        _ = stop => {}
        _ = tokio::time::sleep(Duration::from_secs(60)) => panic!("the events never all showed"),
    }
    drop(bus);
    let mut latencies = latencies.lock().unwrap().clone();
    println!(
        "event on the socket to its text written to the terminal ({} events, 120x40): p50 {} / p99 {} / max {}",
        latencies.len(),
        ms(percentile(&mut latencies, 0.5)),
        ms(percentile(&mut latencies, 0.99)),
        ms(*latencies.iter().max().unwrap())
    );
}
