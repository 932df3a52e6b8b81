//! A program in a pseudo-terminal, its screen kept by a terminal emulator (vt100), typed at
//! like a person would.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A program running in a pseudo-terminal, its screen kept by a terminal emulator.
pub struct Pty {
    pub child: std::process::Child,
    writer: std::fs::File,
    screen: Arc<Mutex<vt100::Parser>>,
    /// Everything the program wrote.
    raw: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    pub fn spawn(command: &mut std::process::Command, rows: u16, cols: u16) -> Pty {
        let mut master = -1;
        let mut slave = -1;
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
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
            std::num::NonZero::new(rows).unwrap(),
            std::num::NonZero::new(cols).unwrap(),
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

    /// Everything the program wrote, escape sequences included.
    pub fn raw(&self) -> Vec<u8> {
        self.raw.lock().unwrap().clone()
    }

    pub fn rows(&self) -> Vec<String> {
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

    /// Answers the hidden prompt `prompt` (dialoguer's `Password`), shown last, with `text`.
    /// Such a prompt turns echo off with `TCSAFLUSH`, which throws away whatever was typed
    /// between the prompt appearing and the switch; an answer that landed there is typed again.
    /// One that was read shows at once in what the program wrote (the screen may have moved
    /// on): `[hidden]` after the prompt when it was taken, the prompt again when it was
    /// refused. So nothing is typed twice.
    pub async fn answer_hidden(&mut self, prompt: &str, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let asked = String::from_utf8_lossy(&self.raw()).matches(prompt).count();
        let answered = |raw: &[u8]| {
            let raw = String::from_utf8_lossy(raw);
            raw.matches(prompt).count() > asked
                || raw
                    .rfind(prompt)
                    .is_some_and(|at| raw[at..].contains("[hidden]"))
        };
        loop {
            self.type_text(text);
            let retry = Instant::now() + Duration::from_secs(2);
            while Instant::now() < retry {
                if answered(&self.raw()) {
                    return;
                }
                assert!(
                    self.child.try_wait().unwrap().is_none(),
                    "the program exited at `{prompt}`; it shows:\n{}",
                    self.contents()
                );
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            assert!(
                Instant::now() < deadline,
                "`{prompt}` was never answered; the screen shows:\n{}",
                self.contents()
            );
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A hidden prompt that flushes what was typed before it reads (as dialoguer's `Password`
    /// does, a second after showing itself here): the answer typed at once is lost and typed
    /// again, and taken exactly once.
    #[tokio::test]
    async fn a_hidden_answer_lost_to_a_flush_is_typed_again_once() {
        let script = r#"
import sys, termios, time
sys.stdout.write("Key: "); sys.stdout.flush()
time.sleep(1.0)
attrs = termios.tcgetattr(0)
attrs[3] &= ~termios.ECHO
termios.tcsetattr(0, termios.TCSAFLUSH, attrs)
line = sys.stdin.readline().strip()
print("[hidden]")
print("got=" + line)
time.sleep(0.5)
"#;
        let mut pty = Pty::spawn(
            std::process::Command::new("python3").args(["-c", script]),
            10,
            60,
        );
        pty.shows("Key:", Duration::from_secs(10)).await;
        let started = Instant::now();
        pty.answer_hidden("Key:", "abc\r", Duration::from_secs(10))
            .await;
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "the first answer was lost, so it was typed again"
        );
        pty.shows("got=", Duration::from_secs(5)).await;
        let raw = String::from_utf8_lossy(&pty.raw()).into_owned();
        assert_eq!(raw.matches("got=abc").count(), 1, "{raw:?}");
        assert!(!raw.contains("got=abcabc"), "{raw:?}");
    }
}
