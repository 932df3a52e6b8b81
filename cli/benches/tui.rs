//! The TUI's figures:
//!
//! - a frame of a 10,000-event transcript: the first (everything laid out) and the frames
//!   while an answer streams in (one block changes), and the memory the transcript takes;
//! - from an event written on the socket to its text leaving the TUI for the terminal;
//! - from starting `centaur tui` in a pseudo-terminal to its first frame.
//!
//!     cargo bench -p centaur --bench tui

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use centaur_cli::client::Client;
use centaur_cli::tui::app::{App, AppEvent, Start};
use centaur_cli::tui::fixtures::{Script, app_following, long_thread};
use centaur_cli::tui::{Runtime, event_loop, highlight, view};
use centaur_protocol::ThreadKey;
use ratatui::backend::{CrosstermBackend, TestBackend};
use ratatui::{Terminal, TerminalOptions, Viewport};
use serde_json::json;
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
    runtime.block_on(startup());
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
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
    let started = Instant::now();
    terminal
        .draw(|frame| view::draw(frame, &mut app, now))
        .unwrap();
    let first = started.elapsed();
    let memory_mib = rss_kib().saturating_sub(before) as f64 / 1024.0;
    // The same thread opened again in this process: what opening costs once the process is warm.
    let mut again = app_following(&events);
    let mut second_terminal = Terminal::new(TestBackend::new(160, 48)).unwrap();
    let started = Instant::now();
    second_terminal
        .draw(|frame| view::draw(frame, &mut again, now))
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
        terminal
            .draw(|frame| view::draw(frame, &mut app, now))
            .unwrap();
        streaming.push(started.elapsed());
    }
    // Scrolled to the middle of the thread.
    app.handle(AppEvent::Key(ratatui::crossterm::event::KeyEvent::new(
        ratatui::crossterm::event::KeyCode::PageUp,
        ratatui::crossterm::event::KeyModifiers::NONE,
    )));
    app.thread.as_mut().unwrap().scroll = 60_000;
    let mut scrolled = Vec::new();
    for _ in 0..500 {
        let started = Instant::now();
        terminal
            .draw(|frame| view::draw(frame, &mut app, now))
            .unwrap();
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
            let event = json!({"event_id": id, "thread_key": "api:bench", "type": "agent.message",
                "created_at": "2026-11-22T10:00:00Z", "execution_id": null, "text": format!("marker{id:05}")});
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
    runtime.run(centaur_cli::tui::Effect::Follow(key));
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

/// A fake server answering the thread list `centaur tui` asks for first.
async fn list_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        let Ok(n) = stream.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buf[..n]);
                    }
                    let at = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
                    request.drain(..at + 4);
                    let body = r#"{"threads":[],"next_before":null}"#;
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

/// Starts `centaur tui` in a pseudo-terminal; returns how long until its first frame arrived.
fn time_to_first_frame(url: &str) -> Duration {
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize {
        ws_row: 40,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors it opened.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0);
    // SAFETY: just opened, owned here.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_centaur"));
    command
        .arg("tui")
        .env("CENTAUR_API_URL", url)
        .env("CENTAUR_API_TOKEN", "token")
        .env("TERM", "xterm-256color")
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = command.spawn().unwrap();
    drop(slave);
    let mut reader = std::fs::File::from(master);
    let mut seen = Vec::new();
    let mut buf = [0u8; 65536];
    let took = loop {
        let n = reader.read(&mut buf).unwrap();
        seen.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&seen).contains("Threads") {
            break started.elapsed();
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    took
}

async fn startup() {
    let url = list_server().await;
    let url_for_thread = url.clone();
    let mut samples = tokio::task::spawn_blocking(move || {
        // The first start warms the page cache.
        time_to_first_frame(&url_for_thread);
        (0..30)
            .map(|_| time_to_first_frame(&url_for_thread))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    println!(
        "`centaur tui` start to first frame in a pseudo-terminal (30 starts): p50 {} / p99 {}",
        ms(percentile(&mut samples, 0.5)),
        ms(percentile(&mut samples, 0.99))
    );
}
