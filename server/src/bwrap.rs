//! bubblewrap's command line, shared by the local sandbox backend ([`crate::sandbox::local`]) and
//! the tool jail ([`crate::tools::jail`]): its arguments ([`Args`], which can be handed over
//! through a descriptor so no process list shows them) and the host's system both mount
//! read-only ([`system_mounts`]).

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::path::Path;

/// The files and folders of `/etc` programs need, mounted read-only at the same path when the
/// host has them: the CA certificates (not the private keys beside them in `/etc/ssl/private`
/// or `/etc/pki/tls/private`), the dynamic linker's cache, the time zone, name service and
/// MIME settings, and the shells' system profiles.
pub const SYSTEM_ETC: [&str; 11] = [
    "/etc/ssl/certs",
    "/etc/ca-certificates",
    "/etc/pki/ca-trust/extracted",
    "/etc/pki/tls/certs",
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/bash.bashrc",
    "/etc/profile",
    "/etc/mime.types",
];

/// bubblewrap's arguments, in order.
#[derive(Debug, Default)]
pub struct Args(Vec<OsString>);

impl Args {
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Args {
        self.0.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<S: AsRef<OsStr>>(&mut self, args: impl IntoIterator<Item = S>) -> &mut Args {
        for arg in args {
            self.arg(arg);
        }
        self
    }

    /// The arguments, for a command line (they hold no secret: paths and options).
    pub fn into_vec(self) -> Vec<OsString> {
        self.0
    }

    /// Writes the arguments NUL-separated to `path` (0600) and opens it for bubblewrap to read
    /// (`--args <fd>`).
    pub fn into_descriptor(self, path: &Path) -> std::io::Result<OwnedFd> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::OpenOptionsExt;
        let mut bytes = Vec::new();
        for arg in &self.0 {
            bytes.extend_from_slice(arg.as_bytes());
            bytes.push(0);
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        std::io::Write::write_all(&mut file, &bytes)?;
        Ok(std::fs::File::open(path)?.into())
    }
}

/// The host's system, read-only: `/usr`, the top-level folders that lead into it (as the
/// symlinks they are on a merged-`/usr` host), and [`SYSTEM_ETC`]. Nothing else of the host:
/// not the server's data, not the homes, not other services' files.
pub fn system_mounts(a: &mut Args) {
    a.args(["--ro-bind", "/usr", "/usr"]);
    for top in ["bin", "lib", "lib64", "sbin"] {
        let host = Path::new("/").join(top);
        match std::fs::read_link(&host) {
            Ok(target) => {
                a.arg("--symlink").arg(target).arg(&host);
            }
            Err(_) if host.is_dir() => {
                a.arg("--ro-bind").arg(&host).arg(&host);
            }
            Err(_) => {}
        }
    }
    for file in SYSTEM_ETC {
        if Path::new(file).exists() {
            a.args(["--ro-bind", file, file]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_written_nul_separated() {
        let dir = std::env::temp_dir().join(format!("args-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut args = Args::default();
        args.args(["--ro-bind", "/usr", "/usr"]).arg("--clearenv");
        let fd = args.into_descriptor(&dir.join("bwrap.args")).unwrap();
        let mut read = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut read).unwrap();
        assert_eq!(read, "--ro-bind\0/usr\0/usr\0--clearenv\0");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_system_mounts_leave_out_private_keys() {
        let mut a = Args::default();
        system_mounts(&mut a);
        let args: Vec<String> = a
            .into_vec()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args[..3], ["--ro-bind", "/usr", "/usr"]);
        for arg in &args {
            assert!(
                arg != "/etc/ssl" && arg != "/etc/pki" && !arg.contains("private"),
                "{arg} in {args:?}"
            );
        }
    }
}
