//! A TCP relay in front of PostgreSQL that a test can cut and restore: the database "goes
//! away" for the server behind it while the test keeps its own connections.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use sqlx::postgres::PgConnectOptions;
use tokio::net::{TcpListener, TcpStream};

/// A TCP relay in front of PostgreSQL that a test can cut and restore.
pub struct Relay {
    pub addr: SocketAddr,
    up: Arc<Mutex<(bool, Vec<tokio::task::AbortHandle>)>>,
    /// While cut: new connections are held open, unanswered, instead of being dropped.
    hanging: Arc<Mutex<Option<Vec<TcpStream>>>>,
}

impl Relay {
    pub async fn start(target_database_url: &str) -> Relay {
        let target = PgConnectOptions::from_str(target_database_url).unwrap();
        let target = format!("{}:{}", target.get_host(), target.get_port());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(Mutex::new((true, Vec::new())));
        let hanging: Arc<Mutex<Option<Vec<TcpStream>>>> = Arc::new(Mutex::new(None));
        let shared = up.clone();
        let held = hanging.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !shared.lock().unwrap().0 {
                    match held.lock().unwrap().as_mut() {
                        Some(held) => held.push(client),
                        None => drop(client),
                    }
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                shared.lock().unwrap().1.push(task.abort_handle());
            }
        });
        Relay { addr, up, hanging }
    }

    /// Like [`Relay::cut`], but new connections hang, unanswered, as they do when the
    /// database's host is gone (rather than refusing them at once).
    pub fn hang(&self) {
        *self.hanging.lock().unwrap() = Some(Vec::new());
        self.cut();
    }

    /// Drops every connection and refuses new ones: the database "goes away".
    pub fn cut(&self) {
        let mut state = self.up.lock().unwrap();
        state.0 = false;
        for task in state.1.drain(..) {
            task.abort();
        }
    }

    pub fn restore(&self) {
        self.up.lock().unwrap().0 = true;
        self.hanging.lock().unwrap().take();
    }
}
