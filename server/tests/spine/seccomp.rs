//! The seccomp filter, from inside real bubblewrap sandboxes: what it refuses is refused, and
//! ordinary work (bash, git, Python, curl, Node) still runs.
//!
//! Each probe is chosen so that without the filter the kernel would answer something else
//! (`EFAULT`, `EINVAL`, `EBADF`, success), so a refusal seen here is the filter's.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::json;

use centaur_test_support::events::{lines, result_text};
use centaur_test_support::local_stack::LocalStack;

fn expect_all(text: &str, expected: &[(&str, &str)]) {
    let seen = lines(text);
    for (key, value) in expected {
        assert_eq!(
            seen.get(*key).map(String::as_str),
            Some(*value),
            "{key} in:\n{text}"
        );
    }
}

/// Raw system calls through Python's ctypes, with this machine's numbers; prints
/// `name=result` where the result is `ok` or the errno's name.
fn probe_script() -> String {
    let calls = [
        // (name, number, arguments)
        (
            "perf_event_open",
            libc::SYS_perf_event_open,
            "0, 0, -1, -1, 0",
        ),
        ("bpf", libc::SYS_bpf, "0, 0, 64"),
        ("io_uring_setup", libc::SYS_io_uring_setup, "1, 0"),
        ("clone3", libc::SYS_clone3, "0, 0"),
        ("openat2", libc::SYS_openat2, "-100, 0, 0, 0"),
        // CLONE_NEWUSER | CLONE_FS | SIGCHLD: the kernel itself rejects the pair (EINVAL), so
        // no process is made even without the filter.
        (
            "clone_newuser",
            libc::SYS_clone,
            "0x10000000 | 0x200 | 17, 0, 0, 0, 0",
        ),
        // Without the filter: a new user namespace, or ENOSPC under `--disable-userns`.
        ("unshare_newuser", libc::SYS_unshare, "0x10000000"),
        ("setns", libc::SYS_setns, "-1, 0"),
        (
            "process_vm_readv",
            libc::SYS_process_vm_readv,
            "1, 0, 0, 0, 0, 0",
        ),
        ("keyctl", libc::SYS_keyctl, "0, -4, 0"),
        // READ_IMPLIES_EXEC; then the query and ADDR_NO_RANDOMIZE, which stay allowed.
        (
            "personality_read_implies_exec",
            libc::SYS_personality,
            "0x0400000",
        ),
        ("personality_query", libc::SYS_personality, "0xffffffff"),
        (
            "personality_no_randomize",
            libc::SYS_personality,
            "0x0040000",
        ),
    ];
    let mut script = String::from(
        r#"python3 - <<'EOF'
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(name, nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    print(name + "=" + ("ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")))
"#,
    );
    for (name, nr, args) in calls {
        script.push_str(&format!("call({name:?}, {nr}, {args})\n"));
    }
    script.push_str("EOF\n");
    script.push_str(
        "unshare -U true 2>&1 | grep -q 'Operation not permitted' && echo unshare_user=EPERM\n",
    );
    script
}

/// Nested user namespaces, perf events, BPF, io_uring and the others are out of reach.
#[tokio::test]
async fn refused_kernel_interfaces_are_refused_from_inside() {
    let stack = LocalStack::start("seccomp-refused", 0, json!({})).await;
    let done = stack
        .turn("api:seccomp-refused", "shell", &probe_script())
        .await;
    expect_all(
        result_text(&done),
        &[
            ("perf_event_open", "EPERM"),
            ("bpf", "EPERM"),
            ("io_uring_setup", "ENOSYS"),
            ("clone3", "ENOSYS"),
            ("openat2", "ENOSYS"),
            ("clone_newuser", "EPERM"),
            ("setns", "EPERM"),
            ("process_vm_readv", "EPERM"),
            ("keyctl", "EPERM"),
            ("personality_read_implies_exec", "EPERM"),
            ("personality_query", "ok"),
            ("personality_no_randomize", "ok"),
            ("unshare_newuser", "EPERM"),
            ("unshare_user", "EPERM"),
        ],
    );
}

/// No setuid or setgid file can be made in the workspace (which is a folder of the host), by
/// `chmod`, `install`, `open` with `O_CREAT` or `mknod`.
#[tokio::test]
async fn no_setuid_or_setgid_file_can_be_made() {
    let stack = LocalStack::start("seccomp-setid", 0, json!({})).await;
    let script = r#"
cd /workspace
mode() { stat -c %a "$1" 2>/dev/null || echo none; }
touch plain; mkdir dir
chmod u+s plain 2>/dev/null && echo chmod_u=ok || echo chmod_u=refused
chmod g+s plain 2>/dev/null && echo chmod_g=ok || echo chmod_g=refused
chmod 6755 plain 2>/dev/null && echo chmod_6755=ok || echo chmod_6755=refused
chmod g+s dir 2>/dev/null && echo chmod_dir=ok || echo chmod_dir=refused
echo plain_mode=$(mode plain)
echo dir_mode=$(mode dir)
install -m 4755 /bin/true installed 2>/dev/null && echo install=ok || echo install=refused
[ -u installed ] && echo installed_setuid=yes || echo installed_setuid=no
python3 - <<'EOF'
import os, stat
def attempt(name, f):
    try:
        f()
        print(name + "=ok")
    except OSError as e:
        print(name + "=" + os.strerror(e.errno).replace(" ", "_"))
attempt("open_creat", lambda: os.close(os.open("opened", os.O_CREAT | os.O_WRONLY, 0o4755)))
attempt("open_creat_g", lambda: os.close(os.open("opened_g", os.O_CREAT | os.O_WRONLY, 0o2755)))
attempt("os_chmod", lambda: os.chmod("plain", 0o4755))
attempt("mknod", lambda: os.mknod("made", 0o4755 | stat.S_IFREG))
attempt("open_plain", lambda: os.close(os.open("ordinary", os.O_CREAT | os.O_WRONLY, 0o755)))
attempt("chmod_plain", lambda: os.chmod("ordinary", 0o700))
attempt("chmod_sticky", lambda: os.chmod("dir", 0o1777))
EOF
echo opened_mode=$(mode opened)
echo ordinary_mode=$(mode ordinary)
"#;
    let done = stack.turn("api:seccomp-setid", "shell", script).await;
    expect_all(
        result_text(&done),
        &[
            ("chmod_u", "refused"),
            ("chmod_g", "refused"),
            ("chmod_6755", "refused"),
            ("chmod_dir", "refused"),
            ("plain_mode", "644"),
            ("dir_mode", "755"),
            ("install", "refused"),
            ("installed_setuid", "no"),
            ("open_creat", "Operation_not_permitted"),
            ("open_creat_g", "Operation_not_permitted"),
            ("os_chmod", "Operation_not_permitted"),
            ("mknod", "Operation_not_permitted"),
            ("opened_mode", "none"),
            ("open_plain", "ok"),
            ("chmod_plain", "ok"),
            ("chmod_sticky", "ok"),
            ("ordinary_mode", "700"),
        ],
    );
    // And from the host: nothing in the workspace is setuid or setgid.
    let workspace = stack.only_workspace();
    assert_no_set_id(&workspace);
    assert!(workspace.join("ordinary").exists());
}

fn assert_no_set_id(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o6000,
            0,
            "{} is setuid or setgid on the host",
            entry.path().display()
        );
        if meta.is_dir() {
            assert_no_set_id(&entry.path());
        }
    }
}

/// What harnesses do every day still works under the filter: threads and processes (clone
/// after clone3's ENOSYS), git, Python, curl through the proxy, and Node where installed.
#[tokio::test]
async fn ordinary_work_still_runs_under_the_filter() {
    let stack = LocalStack::start("seccomp-ordinary", 0, json!({})).await;
    let script = r#"
cd /workspace
git init -q repo && cd repo && echo hi > a && git add a \
  && git -c user.name=t -c user.email=t@example.com commit -qm first \
  && echo git_commits=$(git rev-list --count HEAD)
cd /workspace
python3 -c 'import threading, subprocess; t = threading.Thread(target=print, args=("python=ok",)); t.start(); t.join(); subprocess.run(["true"], check=True)'
echo pipeline=$(seq 1 1000 | sort -n | tail -1)
curl -s -o /dev/null -w 'curl_status=%{http_code}\n' http://nowhere.example/ || echo curl_status=failed
if command -v node >/dev/null; then
  node -e 'require("fs").readFile("/workspace/repo/a", "utf8", (e, d) => { require("child_process").execSync("true"); console.log("node=" + (e ? e.code : d.trim())); })'
else
  echo node=hi
fi
"#;
    let done = stack.turn("api:seccomp-ordinary", "shell", script).await;
    expect_all(
        result_text(&done),
        &[
            ("git_commits", "1"),
            ("python", "ok"),
            ("pipeline", "1000"),
            // The proxy answers (the policy allows nothing), so curl ran fully.
            ("curl_status", "403"),
            ("node", "hi"),
        ],
    );
}
