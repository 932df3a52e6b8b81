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

    /// Answers a hidden prompt (dialoguer's `Password`) and waits until `then` shows or the
    /// program exits. Such a prompt turns echo off with `TCSAFLUSH`, which throws away whatever
    /// was typed between the prompt appearing and the switch, so an answer that lands in that
    /// window is typed again; one that was read moves the screen on within milliseconds.
    pub async fn answer_hidden(&mut self, text: &str, then: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            self.type_text(text);
            let retry = Instant::now() + Duration::from_secs(2);
            while Instant::now() < retry {
                if self.contents().contains(then) || self.child.try_wait().unwrap().is_some() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed `{then}`; it shows:\n{}",
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
