"""A throwaway PostgreSQL cluster for the tests, from the system's server binaries (`initdb`,
`pg_ctl`), as the server's `pg_cluster.rs` runs one: found through `CENTAUR_PG_BINDIR`, `PATH`
or Debian's `/usr/lib/postgresql/<version>/bin`; owned by and run as an unprivileged user
(`nobody`, or `CENTAUR_PG_USER`) when the tests run as root, since PostgreSQL refuses root;
listening on 127.0.0.1 only, on a free port, without fsync."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "centaur"


def find_bin_dir() -> Path | None:
    def has_tools(folder: Path) -> bool:
        return (folder / "initdb").is_file() and (folder / "pg_ctl").is_file()

    configured = os.environ.get("CENTAUR_PG_BINDIR")
    if configured:
        return Path(configured) if has_tools(Path(configured)) else None
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        if entry and has_tools(Path(entry)):
            # Resolve symlinks so that sibling binaries (postgres) are found next to them.
            return Path(os.path.realpath(Path(entry) / "initdb")).parent
    versions = []
    for candidate in Path("/usr/lib/postgresql").glob("*/bin"):
        if candidate.parent.name.isdigit() and has_tools(candidate):
            versions.append((int(candidate.parent.name), candidate))
    return max(versions)[1] if versions else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Cluster:
    root: Path
    bin_dir: Path
    port: int
    password: str
    run_as: tuple[int, int] | None

    @classmethod
    def start(cls) -> Cluster:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise RuntimeError(
                "PostgreSQL server binaries (initdb, pg_ctl) were not found: install them "
                "(Debian/Ubuntu: apt-get install postgresql) or set CENTAUR_PG_BINDIR"
            )
        run_as = None
        if os.geteuid() == 0:
            user = pwd.getpwnam(os.environ.get("CENTAUR_PG_USER", "nobody"))
            run_as = (user.pw_uid, user.pw_gid)
        root = Path(tempfile.mkdtemp(prefix="centaur-tool-pg-"))
        root.chmod(0o700)
        password = secrets.token_hex(16)
        pwfile = root / "password"
        pwfile.write_text(password)
        pwfile.chmod(0o600)
        if run_as:
            os.chown(root, *run_as)
            os.chown(pwfile, *run_as)
        cluster = cls(root, bin_dir, 0, password, run_as)
        data = root / "data"
        cluster._run(
            "initdb", "-D", str(data), "-U", SUPERUSER, "-A", "scram-sha-256", "-E", "UTF8",
            "--locale=C", "--no-sync", "--pwfile", str(pwfile),
        )  # fmt: skip
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(
                "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
        for attempt in range(3):
            cluster.port = _free_port()
            try:
                cluster._run(
                    "pg_ctl", "start", "-w", "-t", "60", "-D", str(data),
                    "-l", str(root / "postgres.log"), "-o", f"-p {cluster.port}",
                )  # fmt: skip
                return cluster
            except RuntimeError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(self.root / "data"))
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        kwargs = {}
        if self.run_as:
            kwargs = {"user": self.run_as[0], "group": self.run_as[1], "extra_groups": []}
        done = subprocess.run(
            [str(self.bin_dir / program), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=self.root,
            **kwargs,
        )
        if done.returncode != 0:
            log = self.root / "postgres.log"
            detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(
                f"{program} failed ({done.returncode}): {detail[0]}"
                + (f"; see {log}" if log.exists() else "")
            )
