//! A private PostgreSQL cluster run from the system's server binaries (`initdb` + `pg_ctl`).
//!
//! Tests use it as a throwaway cluster when `DATABASE_URL` is unset; `centaur dev` uses it as a
//! cluster that persists under the user's data directory. PostgreSQL refuses to run as root, so
//! when this process is root the cluster is owned by and runs as an unprivileged user (`nobody`
//! unless `CENTAUR_PG_USER` names another).
//!
//! Layout of `root`: `data/` (the cluster), `password` (0600, the superuser's password),
//! `postgres.log`.

use std::ffi::CString;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::crypto::random_hex;

pub const SUPERUSER: &str = "centaur";

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found; install them \
         (Debian/Ubuntu: `apt-get install postgresql`) or set CENTAUR_PG_BINDIR"
    )]
    BinariesNotFound,
    #[error(
        "running as root, but the unprivileged user `{0}` for PostgreSQL does not exist; set CENTAUR_PG_USER"
    )]
    NoUnprivilegedUser(String),
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    move |e| ClusterError::Io(context.into(), e)
}

#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Folder that holds the cluster; created if missing.
    pub root: PathBuf,
    /// `false` turns off fsync and synchronous commit: for throwaway test clusters only.
    pub durable: bool,
    pub max_connections: u32,
}

/// A running cluster. Dropping it does not stop it; call [`PgCluster::stop`].
#[derive(Debug)]
pub struct PgCluster {
    root: PathBuf,
    bin_dir: PathBuf,
    port: u16,
    password: String,
    run_as: Option<(u32, u32)>,
}

impl PgCluster {
    /// Initialises the cluster if `root` holds none yet, and starts it unless it already runs.
    pub fn start(options: &ClusterOptions) -> Result<PgCluster, ClusterError> {
        let bin_dir = find_bin_dir().ok_or(ClusterError::BinariesNotFound)?;
        let run_as = unprivileged_user()?;
        let root = options.root.clone();
        std::fs::create_dir_all(&root).map_err(io_err(format!("creating {}", root.display())))?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err("setting permissions"))?;
        chown(&root, run_as)?;

        let mut cluster = PgCluster {
            password: String::new(),
            port: 0,
            root,
            bin_dir,
            run_as,
        };
        if !cluster.data_dir().join("PG_VERSION").exists() {
            cluster.init(options)?;
        }
        cluster.password = std::fs::read_to_string(cluster.root.join("password"))
            .map_err(io_err("reading the cluster password"))?
            .trim()
            .to_owned();

        if let Some(port) = cluster.running_port() {
            cluster.port = port;
            return Ok(cluster);
        }
        // A free port can be taken between our probe and the server's bind: try a few.
        let mut last_error = None;
        for _ in 0..3 {
            cluster.port = free_port().map_err(io_err("finding a free port"))?;
            match cluster.pg_ctl_start() {
                Ok(()) => return Ok(cluster),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A connection URL for `database` as the cluster's superuser.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// Stops the server (fast shutdown: open sessions are ended), keeping the data.
    pub fn stop(&self) -> Result<(), ClusterError> {
        let data = self.data_dir();
        self.run(
            "pg_ctl stop",
            Command::new(self.bin("pg_ctl"))
                .args(["stop", "-w", "-m", "fast", "-D"])
                .arg(&data),
        )
    }

    /// Makes sure the cluster and its folder disappear once process `pid` has exited, even if it
    /// is killed: a small detached watchdog does the cleanup. For throwaway clusters.
    pub fn remove_when_process_exits(&self, pid: u32) -> Result<(), ClusterError> {
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
             pm=$(head -n 1 '{data}/postmaster.pid' 2>/dev/null); \
             if [ -n \"$pm\" ]; then kill -QUIT \"$pm\" 2>/dev/null; \
               i=0; while kill -0 \"$pm\" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; fi; \
             rm -rf '{root}'",
            data = self.data_dir().display(),
            root = self.root.display(),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(io_err("starting the cluster watchdog"))?;
        Ok(())
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    fn init(&self, options: &ClusterOptions) -> Result<(), ClusterError> {
        let password = random_hex(24);
        let pwfile = self.root.join("password");
        write_private(&pwfile, &password, self.run_as)?;
        let mut initdb = Command::new(self.bin("initdb"));
        initdb
            .arg("-D")
            .arg(self.data_dir())
            .args(["-U", SUPERUSER, "-A", "scram-sha-256", "-E", "UTF8"])
            .args(["--locale=C", "--pwfile"])
            .arg(&pwfile);
        if !options.durable {
            initdb.arg("--no-sync");
        }
        self.run("initdb", &mut initdb)?;

        let mut settings = String::from(
            "\n# Added by Centaur\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n",
        );
        settings.push_str(&format!("max_connections = {}\n", options.max_connections));
        if !options.durable {
            settings.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
        }
        let conf = self.data_dir().join("postgresql.conf");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .map_err(io_err(format!("opening {}", conf.display())))?;
        file.write_all(settings.as_bytes())
            .map_err(io_err("writing postgresql.conf"))?;
        Ok(())
    }

    fn pg_ctl_start(&self) -> Result<(), ClusterError> {
        self.run(
            "pg_ctl start",
            Command::new(self.bin("pg_ctl"))
                .args(["start", "-w", "-t", "60", "-D"])
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.root.join("postgres.log"))
                .args(["-o", &format!("-p {}", self.port)]),
        )
        .map_err(|e| match e {
            ClusterError::Command { what, detail } => ClusterError::Command {
                what,
                detail: format!("{detail}; see {}", self.root.join("postgres.log").display()),
            },
            other @ (ClusterError::BinariesNotFound
            | ClusterError::NoUnprivilegedUser(_)
            | ClusterError::Io(..)) => other,
        })
    }

    /// The port of an already running server for this data folder.
    fn running_port(&self) -> Option<u16> {
        let status = Command::new(self.bin("pg_ctl"))
            .arg("status")
            .arg("-D")
            .arg(self.data_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .as_user(self.run_as)
            .status()
            .ok()?;
        if !status.success() {
            return None;
        }
        // postmaster.pid: pid, data dir, start time, port, ...
        let pidfile = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        pidfile.lines().nth(3)?.trim().parse().ok()
    }

    fn run(&self, what: &str, command: &mut Command) -> Result<(), ClusterError> {
        let output = command
            .stdin(Stdio::null())
            .as_user(self.run_as)
            .output()
            .map_err(io_err(format!("running {what}")))?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let detail = stderr
            .lines()
            .chain(stdout.lines())
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output")
            .trim()
            .to_owned();
        Err(ClusterError::Command {
            what: what.to_owned(),
            detail: format!("{} ({detail})", output.status),
        })
    }
}

trait AsUser {
    fn as_user(&mut self, user: Option<(u32, u32)>) -> &mut Self;
}

impl AsUser for Command {
    fn as_user(&mut self, user: Option<(u32, u32)>) -> &mut Self {
        if let Some((uid, gid)) = user {
            // std clears supplementary groups when root sets a uid.
            self.uid(uid).gid(gid);
        }
        self
    }
}

/// Where `initdb` and `pg_ctl` live: `CENTAUR_PG_BINDIR`, then `PATH`, then Debian's layout.
pub fn find_bin_dir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("CENTAUR_PG_BINDIR").map(PathBuf::from) {
        return has_tools(&dir).then_some(dir);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_tools(&dir) {
                // Resolve symlinks so sibling binaries (postgres) are found next to them.
                let real = std::fs::canonicalize(dir.join("initdb")).ok()?;
                return real.parent().map(Path::to_path_buf);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, dir)| has_tools(dir))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir)
}

/// `None` unless we are root, in which case the uid/gid PostgreSQL must run as.
fn unprivileged_user() -> Result<Option<(u32, u32)>, ClusterError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = std::env::var("CENTAUR_PG_USER").unwrap_or_else(|_| "nobody".to_owned());
    let cname =
        CString::new(name.clone()).map_err(|_| ClusterError::NoUnprivilegedUser(name.clone()))?;
    // SAFETY: getpwnam returns null or a pointer to a static record we read immediately.
    let entry = unsafe { libc::getpwnam(cname.as_ptr()) };
    if entry.is_null() {
        return Err(ClusterError::NoUnprivilegedUser(name));
    }
    // SAFETY: checked for null above.
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    Ok(Some((uid, gid)))
}

fn chown(path: &Path, user: Option<(u32, u32)>) -> Result<(), ClusterError> {
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(io_err(format!("chown {}", path.display())))?;
    }
    Ok(())
}

fn write_private(
    path: &Path,
    contents: &str,
    owner: Option<(u32, u32)>,
) -> Result<(), ClusterError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(format!("writing {}", path.display())))?;
    file.write_all(contents.as_bytes())
        .map_err(io_err(format!("writing {}", path.display())))?;
    chown(path, owner)
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
