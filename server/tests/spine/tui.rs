//! The `centaur` TUI end to end: the real binary in a pseudo-terminal, against a real server
//! process with real sandboxes. The test reads the screen as a terminal would draw it (vt100)
//! and types like a person.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sandboxes::{ServerProcess, free_port, kill_sandboxes, process_env};
use crate::support::*;

const ROWS: u16 = 44;
const COLS: u16 = 100;

/// A program running in a pseudo-terminal, its screen kept by a terminal emulator.
pub struct Pty {
    pub child: std::process::Child,
    writer: std::fs::File,
    screen: Arc<Mutex<vt100::Parser>>,
    /// Everything the program wrote.
    raw: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    pub fn spawn(command: &mut std::process::Command) -> Pty {
        let mut master = -1;
        let mut slave = -1;
        let size = libc::winsize {
            ws_row: ROWS,
            ws_col: COLS,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two descriptors it opened; the size is read only.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned here.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        command
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
        let child = command.spawn().expect("the program starts");
        drop(slave);
        let writer = std::fs::File::from(master.try_clone().unwrap());
        let mut reader = std::fs::File::from(master);
        let screen = Arc::new(Mutex::new(vt100::Parser::new(
            std::num::NonZero::new(ROWS).unwrap(),
            std::num::NonZero::new(COLS).unwrap(),
            0,
        )));
        let raw = Arc::new(Mutex::new(Vec::new()));
        let (screen_in, raw_in) = (screen.clone(), raw.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            // EIO once the program has exited and the terminal closed.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                screen_in.lock().unwrap().process(&buf[..n]);
                raw_in.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            child,
            writer,
            screen,
            raw,
        }
    }

    pub fn contents(&self) -> String {
        self.screen.lock().unwrap().screen().contents()
    }

    fn rows(&self) -> Vec<String> {
        self.contents().lines().map(str::to_owned).collect()
    }

    pub fn type_text(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).unwrap();
        self.writer.flush().unwrap();
    }

    /// Waits until the screen shows what `ready` looks for.
    pub async fn until(&self, what: &str, timeout: Duration, ready: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let contents = self.contents();
            if ready(&contents) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {what}; it shows:\n{contents}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits for the program to exit.
    pub async fn exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the program did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn shows(&self, text: &str, timeout: Duration) {
        self.until(&format!("`{text}`"), timeout, |s| s.contains(text))
            .await
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A person's session: start a thread, answer an approval, see the output; then the server
/// is killed mid-turn and restarted, and the screen reconnects and shows every line once.
#[tokio::test]
async fn a_session_in_the_tui_survives_a_server_restart() {
    let dir = temp_dir("tui");
    let proxy = TestProxy::start(None, dir.join("proxy")).await;
    let port = free_port();
    let mut env = process_env(&dir, &proxy).await;
    env.push(("CENTAUR_APPROVAL_POLICY".into(), "always".into()));
    let mut server = ServerProcess::start(&env, port);
    server.wait_ready().await;

    let mut tui = Pty::spawn(
        std::process::Command::new(cli_binary())
            .args(["tui", "--harness", "shell"])
            .env("CENTAUR_API_URL", &server.url)
            .env("CENTAUR_API_TOKEN", ADMIN_KEY)
            .env("HOME", dir.join("home"))
            .env("TERM", "xterm-256color"),
    );
    tui.shows("new thread · shell", Duration::from_secs(10))
        .await;

    // A message, an approval, the answer.
    tui.type_text("echo hello-from-the-tui\r");
    tui.shows("Approve this command?", Duration::from_secs(30))
        .await;
    assert!(tui.contents().contains("run `echo hello-from-the-tui`"));
    tui.type_text("y");
    tui.until("the command's output", Duration::from_secs(30), |s| {
        s.lines().any(|l| l.trim() == "hello-from-the-tui") && s.contains("✓ done")
    })
    .await;
    assert!(tui.contents().contains("approved by"), "{}", tui.contents());

    // A slow turn; the server dies in the middle of it and comes back.
    tui.type_text("for i in $(seq 1 12); do echo line-$i; sleep 0.3; done\r");
    tui.shows("Approve this command?", Duration::from_secs(30))
        .await;
    tui.type_text("y");
    tui.until("line-3", Duration::from_secs(30), |s| {
        s.lines().any(|l| l.trim() == "line-3")
    })
    .await;
    server.kill();
    tui.shows("reconnecting", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut server = ServerProcess::start(&env, port);
    server.wait_ready().await;
    tui.until("the turn's end", Duration::from_secs(60), |s| {
        s.matches("✓ done").count() == 2 && s.contains("● live")
    })
    .await;

    // Every line of output exactly once, with the output opened up.
    tui.type_text("\x0f"); // Ctrl-O
    tui.until("line-1", Duration::from_secs(5), |s| {
        s.lines().any(|l| l.trim() == "line-1")
    })
    .await;
    let rows = tui.rows();
    for n in 1..=12 {
        let line = format!("line-{n}");
        let seen = rows.iter().filter(|r| r.trim() == line).count();
        assert_eq!(seen, 1, "{line} shown {seen} times:\n{}", rows.join("\n"));
    }

    // Ctrl-C twice quits and gives the terminal back.
    tui.type_text("\x03");
    tui.shows("press Ctrl-C again to quit", Duration::from_secs(5))
        .await;
    tui.type_text("\x03");
    let status = tui.exit(Duration::from_secs(5)).await;
    assert!(status.success(), "{status:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let raw = tui.raw.lock().unwrap().clone();
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.contains("\x1b[?1049l"), "the alternate screen was left");
    server.terminate();
    kill_sandboxes(&dir.join("data"));
    let _ = std::fs::remove_dir_all(&dir);
}
