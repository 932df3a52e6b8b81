//! The stack's supervisor: it watches the parts of the stack that can die on their own (the
//! private PostgreSQL, the proxy's control API) and restarts one that died, with a backoff
//! (0.5 s, doubling up to 30 s). Each death, failed attempt and recovery is a line in
//! `logs/stack.log` and is recorded in `stack.json`, where `centaur dev status` shows it.
//!
//! The server needs no restart: it waits out a database that goes away and comes back.

use std::future::Future;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use centaur_proxy::control::Control;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::home::{Home, PartHealth, StackState, alive};
use centaur_client::private_file::write_atomic;

/// How often each part is checked.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// The wait before the first restart, doubled after each failed attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A part that stayed up this long after a restart starts again from [`FIRST_BACKOFF`].
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Probes of the proxy's port that may fail in a row before its task is taken for stuck.
const PROXY_MISSES: u32 = 3;

/// Why a part could not be restarted.
#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    #[error("PostgreSQL's server binaries (initdb, pg_ctl) are no longer found")]
    NoBinaries,
    #[error("the unprivileged user `{0}` for PostgreSQL does not exist")]
    NoUser(String),
    #[error("cannot run pg_ctl: {0}")]
    Spawn(std::io::Error),
    #[error("PostgreSQL did not start: {0}")]
    Postgres(String),
    #[error("the restart task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
    #[error("cannot listen on {addr} again: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Which part of the stack's state a part's health is kept in.
#[derive(Clone, Copy, Debug)]
enum Slot {
    Postgres,
    Proxy,
}

/// Something the supervisor watches and restarts.
trait Part: Send + 'static {
    /// Its name in the stack log and in `centaur dev logs`.
    const NAME: &'static str;
    const SLOT: Slot;
    /// `None` while it runs; why it is gone otherwise.
    fn check(&mut self) -> impl Future<Output = Option<String>> + Send;
    /// Starts it again.
    fn restart(&mut self) -> impl Future<Output = Result<(), RestartError>> + Send;
}

/// The running supervisor; [`Supervisor::stop`] ends it before the stack stops its parts.
pub struct Supervisor {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Supervisor {
    /// Starts watching. `state` is what `stack.json` holds (already written); it is rewritten
    /// on every change of a part's health.
    pub fn start(
        home: &Home,
        state: StackState,
        postgres: Option<Postgres>,
        proxy: ProxyApi,
    ) -> Supervisor {
        let stop = CancellationToken::new();
        let record = Record {
            path: home.state_file(),
            state: Arc::new(Mutex::new(state)),
        };
        let mut tasks = vec![tokio::spawn(watch(proxy, record.clone(), stop.clone()))];
        if let Some(postgres) = postgres {
            tasks.push(tokio::spawn(watch(postgres, record, stop.clone())));
        }
        Supervisor { stop, tasks }
    }

    /// Stops watching; a restart under way is finished first, so that what is stopped next
    /// stays stopped.
    pub async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// `stack.json`, as the supervisor keeps it up to date.
#[derive(Clone)]
struct Record {
    path: PathBuf,
    state: Arc<Mutex<StackState>>,
}

impl Record {
    fn update(&self, slot: Slot, change: impl FnOnce(&mut PartHealth)) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        change(match slot {
            Slot::Postgres => &mut state.postgres_health,
            Slot::Proxy => &mut state.proxy_health,
        });
        let json = serde_json::to_string_pretty(&*state).expect("a stack's state is JSON");
        if let Err(error) = write_atomic(&self.path, &json) {
            log(
                "stack",
                &format!("cannot update {}: {error}", self.path.display()),
            );
        }
    }
}

/// A line in the stack log (the stack's stderr).
fn log(part: &str, line: &str) {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    let _ = writeln!(std::io::stderr(), "{now} {part}: {line}");
}

/// Watches `part` until `stop`, restarting it whenever it dies.
async fn watch<P: Part>(mut part: P, record: Record, stop: CancellationToken) {
    let mut backoff = FIRST_BACKOFF;
    let mut last_restart: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        let Some(reason) = part.check().await else {
            continue;
        };
        if last_restart.is_none_or(|at| at.elapsed() > STABLE_AFTER) {
            backoff = FIRST_BACKOFF;
        }
        record.update(P::SLOT, |health| {
            health.down = true;
            health.failures += 1;
            health.last_failure_at = Some(chrono::Utc::now());
            health.last_failure = Some(reason.clone());
            health.restart_error = None;
        });
        log(
            P::NAME,
            &format!(
                "{reason}; restarting in {:.1} s (see `centaur dev logs {}`)",
                backoff.as_secs_f32(),
                P::NAME
            ),
        );
        let mut attempt = 1;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            match part.restart().await {
                Ok(()) => {
                    record.update(P::SLOT, |health| {
                        health.down = false;
                        health.restart_error = None;
                    });
                    log(P::NAME, &format!("restarted (attempt {attempt})"));
                    break;
                }
                Err(error) => {
                    let error = error.to_string();
                    log(
                        P::NAME,
                        &format!(
                            "restart attempt {attempt} failed: {error}; next in {:.1} s",
                            backoff.as_secs_f32()
                        ),
                    );
                    record.update(P::SLOT, |health| health.restart_error = Some(error));
                    attempt += 1;
                }
            }
        }
        last_restart = Some(Instant::now());
    }
}

/// The stack's private PostgreSQL cluster in `root`, restarted on the port it had: the
/// server's connection URL names that port.
pub struct Postgres {
    pub root: PathBuf,
    pub port: u16,
}

impl Part for Postgres {
    const NAME: &'static str = "postgres";
    const SLOT: Slot = Slot::Postgres;

    async fn check(&mut self) -> Option<String> {
        match postmaster_pid(&self.root) {
            Some(pid) if alive(pid) => None,
            Some(pid) => Some(format!("the postmaster (pid {pid}) exited")),
            None => Some("PostgreSQL stopped (its postmaster.pid is gone)".to_owned()),
        }
    }

    async fn restart(&mut self) -> Result<(), RestartError> {
        let (root, port) = (self.root.clone(), self.port);
        tokio::task::spawn_blocking(move || start_postgres(&root, port))
            .await
            .map_err(RestartError::Task)?
    }
}

/// The pid in the cluster's `postmaster.pid`, if the file is there.
fn postmaster_pid(root: &Path) -> Option<u32> {
    std::fs::read_to_string(root.join("data").join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// `pg_ctl start` on `port`, as the user PostgreSQL runs as.
fn start_postgres(root: &Path, port: u16) -> Result<(), RestartError> {
    let data = root.join("data");
    // A postmaster that died unreaped (a zombie, where init does not reap) still "exists" for
    // PostgreSQL's own check of its lock file: that file is stale, remove it.
    if let Some(pid) = postmaster_pid(root)
        && !alive(pid)
    {
        let _ = std::fs::remove_file(data.join("postmaster.pid"));
    }
    let bin = centaur_server::pg_cluster::find_bin_dir().ok_or(RestartError::NoBinaries)?;
    let log_path = root.join("postgres.log");
    let log_start = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
    let mut command = Command::new(bin.join("pg_ctl"));
    command
        .args(["start", "-w", "-t", "30", "-D"])
        .arg(&data)
        .arg("-l")
        .arg(&log_path)
        .args(["-o", &format!("-p {port}")])
        .stdin(Stdio::null());
    if let Some((uid, gid)) = postgres_user()? {
        command.uid(uid).gid(gid);
    }
    let output = command.output().map_err(RestartError::Spawn)?;
    if output.status.success() {
        return Ok(());
    }
    // PostgreSQL's own reason, from its log, else what pg_ctl said.
    let said = String::from_utf8_lossy(&output.stderr).into_owned();
    let reason = last_fatal(&log_path, log_start)
        .or_else(|| {
            said.lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("pg_ctl exited with {}", output.status));
    Err(RestartError::Postgres(reason))
}

/// The last `FATAL` line PostgreSQL wrote to its log after `from`.
fn last_fatal(path: &Path, from: u64) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    file.seek(SeekFrom::Start(from)).ok()?;
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.lines()
        .rev()
        .find_map(|l| l.split_once("FATAL:").map(|(_, why)| why.trim().to_owned()))
}

/// `None` unless this process is root; then the uid and gid PostgreSQL runs as (`nobody`, or
/// `CENTAUR_PG_USER`), as when the cluster was first started.
fn postgres_user() -> Result<Option<(u32, u32)>, RestartError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = std::env::var("CENTAUR_PG_USER").unwrap_or_else(|_| "nobody".to_owned());
    let cname =
        std::ffi::CString::new(name.clone()).map_err(|_| RestartError::NoUser(name.clone()))?;
    // SAFETY: getpwnam returns null or a pointer to a static record read at once.
    let entry = unsafe { libc::getpwnam(cname.as_ptr()) };
    if entry.is_null() {
        return Err(RestartError::NoUser(name));
    }
    // SAFETY: checked for null above.
    Ok(Some(unsafe { ((*entry).pw_uid, (*entry).pw_gid) }))
}

/// The proxy's control API (its registry of sandboxes lives in `control` and survives a
/// restart of the listener).
pub struct ProxyApi {
    control: Arc<Control>,
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<std::io::Result<()>>>,
    misses: u32,
}

impl ProxyApi {
    /// Serves `control` on `listener` until `shutdown`.
    pub fn start(
        control: Arc<Control>,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> Result<ProxyApi, RestartError> {
        let addr = listener.local_addr().map_err(|source| RestartError::Bind {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            source,
        })?;
        let mut api = ProxyApi {
            control,
            addr,
            shutdown,
            task: None,
            misses: 0,
        };
        api.serve(listener);
        Ok(api)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let (control, shutdown) = (self.control.clone(), self.shutdown.clone());
        self.task = Some(tokio::spawn(async move {
            control.serve(listener, shutdown).await
        }));
        self.misses = 0;
    }
}

impl Part for ProxyApi {
    const NAME: &'static str = "proxy";
    const SLOT: Slot = Slot::Proxy;

    async fn check(&mut self) -> Option<String> {
        let Some(task) = self.task.as_mut() else {
            return Some("its control API is not running".to_owned());
        };
        if task.is_finished() {
            let ended = task.await;
            self.task = None;
            return Some(match ended {
                Ok(Ok(())) => "its control API stopped".to_owned(),
                Ok(Err(error)) => format!("its control API failed: {error}"),
                Err(error) if error.is_panic() => "its control API crashed".to_owned(),
                Err(error) => format!("its control API ended: {error}"),
            });
        }
        let answers = tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(self.addr),
        )
        .await
        .is_ok_and(|connected| connected.is_ok());
        if answers {
            self.misses = 0;
            return None;
        }
        self.misses += 1;
        if self.misses < PROXY_MISSES {
            return None;
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
        Some(format!(
            "its control API stopped answering on {}",
            self.addr
        ))
    }

    async fn restart(&mut self) -> Result<(), RestartError> {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .map_err(|source| RestartError::Bind {
                addr: self.addr,
                source,
            })?;
        self.serve(listener);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A part that is down from the start and whose first `failing` restarts fail.
    struct Flaky {
        up: bool,
        failing: Arc<AtomicU32>,
    }

    impl Part for Flaky {
        const NAME: &'static str = "flaky";
        const SLOT: Slot = Slot::Proxy;

        async fn check(&mut self) -> Option<String> {
            (!self.up).then(|| "it fell over".to_owned())
        }

        async fn restart(&mut self) -> Result<(), RestartError> {
            if self.failing.load(Ordering::SeqCst) > 0 {
                self.failing.fetch_sub(1, Ordering::SeqCst);
                return Err(RestartError::Postgres("not yet".into()));
            }
            self.up = true;
            Ok(())
        }
    }

    fn state() -> StackState {
        StackState {
            pid: 1,
            api_url: "http://127.0.0.1:1".into(),
            proxy_control_url: "http://127.0.0.1:2".into(),
            postgres_address: "127.0.0.1:3".into(),
            postgres_private: true,
            started_at: chrono::Utc::now(),
            version: "test".into(),
            harnesses_ready: vec![centaur_protocol::Harness::Shell],
            warm_pool: 0,
            postgres_health: PartHealth::default(),
            proxy_health: PartHealth::default(),
        }
    }

    fn read(path: &Path) -> StackState {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// A death is recorded at once, a failed attempt with its reason, and the recovery; the
    /// count stays one death.
    #[tokio::test]
    async fn a_dead_part_is_restarted_and_its_history_recorded() {
        let dir = std::env::temp_dir().join(format!("centaur-supervise-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stack.json");
        let record = Record {
            path: path.clone(),
            state: Arc::new(Mutex::new(state())),
        };
        let failing = Arc::new(AtomicU32::new(1));
        let part = Flaky {
            up: false,
            failing: failing.clone(),
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch(part, record, stop.clone()));

        let deadline = Instant::now() + Duration::from_secs(10);
        let mut saw_failed_attempt = false;
        loop {
            if let Ok(text) = std::fs::read_to_string(&path)
                && let Ok(state) = serde_json::from_str::<StackState>(&text)
            {
                let health = &state.proxy_health;
                saw_failed_attempt |= health.down
                    && health.restart_error.as_deref() == Some("PostgreSQL did not start: not yet");
                if !health.down && health.failures == 1 {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "never restarted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        task.await.unwrap();
        let health = read(&path).proxy_health;
        assert!(saw_failed_attempt, "the failed attempt was not recorded");
        assert_eq!(health.last_failure.as_deref(), Some("it fell over"));
        assert_eq!(health.restart_error, None);
        assert!(
            health.describe().starts_with("restarted 1 time, last "),
            "{}",
            health.describe()
        );
        assert_eq!(read(&path).postgres_health, PartHealth::default());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The proxy's control API, its task gone, is noticed and served again on its port.
    #[tokio::test]
    async fn the_proxy_control_api_comes_back_on_its_port() {
        let (_, control) = centaur_proxy::service::build(
            centaur_proxy::service::Settings {
                key: vec![7; 32],
                secrets: Default::default(),
                secret_ttl: Duration::from_secs(60),
                ca: None,
                extra_roots: Vec::new(),
                audit: None,
                control_token: Some("token".into()),
                socket_dir: None,
                limits: Default::default(),
            },
            &CancellationToken::new(),
        )
        .unwrap();
        let shutdown = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut api = ProxyApi::start(control, listener, shutdown.clone()).unwrap();
        assert_eq!(api.check().await, None);
        let addr = api.addr();
        api.task.take().unwrap().abort();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
        assert!(api.check().await.is_some());
        api.restart().await.unwrap();
        assert_eq!(api.addr(), addr);
        assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
        assert_eq!(api.check().await, None);
        shutdown.cancel();
    }
}
