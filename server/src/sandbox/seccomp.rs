//! The seccomp filter local sandboxes run under: a classic BPF program for `bwrap --seccomp`.
//!
//! Namespaces, a read-only system and an unprivileged user keep a sandbox away from the host's
//! files, processes and network; this filter keeps it away from the parts of the kernel that
//! those do not cover and that no harness (Codex, Claude Code, bash, git, Python, curl) needs.
//! Everything else is allowed.
//!
//! Refused with `EPERM`:
//!
//! - the kernel keyrings (`add_key`, `request_key`, `keyctl`): they are not namespaced, and the
//!   keyring of the host user a sandbox runs as may hold real credentials;
//! - new namespaces: `setns`, and `unshare` or `clone` asking for any new namespace. A nested
//!   user namespace gives its creator every capability inside it, and with them the kernel's
//!   mount, network and other code that the sandbox's user otherwise cannot reach (so
//!   `unshare -U` fails, and so do programs that sandbox themselves with namespaces, such as
//!   Chromium without `--no-sandbox`);
//! - mounting (`mount`, `umount2`, `pivot_root`, `chroot`, and the newer mount API:
//!   `open_tree`, `move_mount`, `fsopen`, `fsconfig`, `fsmount`, `fspick`, `mount_setattr`);
//! - kernel interfaces with a long record of privilege escalations that no harness uses: `bpf`,
//!   `perf_event_open`, `userfaultfd`, `fanotify_init`, and the NUMA memory-policy calls
//!   (`mbind`, `set_mempolicy`, `set_mempolicy_home_node`, `get_mempolicy`, `migrate_pages`,
//!   `move_pages`);
//! - the machine itself: kernel modules (`init_module`, `finit_module`, `delete_module`),
//!   `kexec_load`, `kexec_file_load`, `reboot`, `swapon`, `swapoff`, `acct`, `quotactl`,
//!   `quotactl_fd`, the clock (`settimeofday`, `clock_settime`, `clock_adjtime`, `adjtimex`),
//!   the kernel log (`syslog`), `vhangup`, `lookup_dcookie`, and on x86_64 the I/O ports and
//!   segment tables (`iopl`, `ioperm`, `modify_ldt`) and obsolete calls (`uselib`, `ustat`,
//!   `sysfs`, `_sysctl`);
//! - files by handle (`name_to_handle_at`, `open_by_handle_at`), which can name files outside
//!   the sandbox's mounts;
//! - other processes' memory and descriptors: `process_vm_readv`, `process_vm_writev`, `kcmp`,
//!   `pidfd_getfd`;
//! - `personality` with anything but the plain persona, the 32-bit `uname`, `UNAME26` and
//!   `ADDR_NO_RANDOMIZE` (which debuggers use), or the query; others (`READ_IMPLIES_EXEC`,
//!   `MMAP_PAGE_ZERO`…) weaken memory protections;
//! - setuid and setgid files: `chmod`, `fchmod`, `fchmodat` and `fchmodat2` with `S_ISUID` or
//!   `S_ISGID` in the mode, `open` and `openat` with `O_CREAT` or `O_TMPFILE` and such a mode,
//!   and `creat`, `mknod` and `mknodat` with such a mode. The workspace is a folder of the host,
//!   where a setuid file made inside would be setuid outside too;
//! - `ioctl` `TIOCSTI` and `TIOCLINUX`, which push input into a terminal;
//! - system calls of another architecture (32-bit programs) and the x32 ABI, which would
//!   otherwise get around rules made by number.
//!
//! Answered `ENOSYS` ("not implemented"), so that programs fall back as they do on older
//! kernels: `clone3` (whose flags sit in memory the filter cannot read; glibc falls back to
//! `clone`), `openat2` (likewise; back to `openat`), `io_uring_setup`, `io_uring_enter` and
//! `io_uring_register` (io_uring does its work outside system calls, where no filter sees it;
//! Node's libuv falls back to threads), and every call numbered above `removexattrat` (466 on
//! both architectures), so that a newer kernel's calls stay closed until they are reviewed
//! here.
//!
//! `ptrace` stays allowed: debuggers and `strace` trace their own children, the kernel checks
//! the filter again after a tracer changes a call (since Linux 4.8), a sandbox sees only its
//! own processes, all of the same user, and the one holding a secret, the runner with its
//! token, makes itself non-dumpable, which the kernel requires a capability to trace or to
//! read the memory of.
//!
//! The filter is made with `seccompiler` (from Firecracker), whose tables turn call names into
//! each architecture's numbers, so the programs for x86_64 and aarch64 are both built, and
//! tested, on either. It is three parts run one after the other: a few instructions written
//! here (the architecture, x32 and newer calls), the `ENOSYS` rules and the `EPERM` rules,
//! each of the last two compiled by `seccompiler` with "allow" turned into "go on to the next
//! part" for all but the last.

use std::sync::OnceLock;

use seccompiler::{BpfProgram, TargetArch, sock_filter};
use serde_json::{Value, json};

/// Why no filter could be made.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("the sandbox's seccomp filter knows only x86_64 and aarch64 system calls")]
    UnsupportedArchitecture,
    #[error("compiling the sandbox's seccomp filter: {0}")]
    Compile(#[from] seccompiler::Error),
    #[error("the compiled seccomp filter lacks its `{0}` part")]
    MissingPart(&'static str),
    #[error("the sandbox's seccomp filter has {0} instructions, more than the kernel takes")]
    TooLong(usize),
}

/// The program for this machine's architecture, as bytes for `bwrap --seccomp`; `None` (with
/// the reason logged) where it cannot be made, which is only on an architecture other than
/// x86_64 and aarch64.
pub fn program() -> Option<Vec<u8>> {
    static PROGRAM: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    PROGRAM
        .get_or_init(|| match try_program() {
            Ok(bytes) => Some(bytes),
            Err(error) => {
                tracing::error!(%error, "no seccomp filter for local sandboxes");
                None
            }
        })
        .clone()
}

/// The program for this machine's architecture, as bytes for `bwrap --seccomp`.
pub fn try_program() -> Result<Vec<u8>, FilterError> {
    let arch = Arch::native().ok_or(FilterError::UnsupportedArchitecture)?;
    Ok(to_bytes(&build(arch)?))
}

/// The architectures the filter is made for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    fn native() -> Option<Arch> {
        if cfg!(target_arch = "x86_64") {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else {
            None
        }
    }

    /// `AUDIT_ARCH_*`, as the kernel gives it in `seccomp_data.arch`.
    fn audit(self) -> u32 {
        match self {
            Arch::X86_64 => 0xc000_003e,
            Arch::Aarch64 => 0xc000_00b7,
        }
    }

    fn target(self) -> TargetArch {
        match self {
            Arch::X86_64 => TargetArch::x86_64,
            Arch::Aarch64 => TargetArch::aarch64,
        }
    }

    /// Whether the architecture has the call (aarch64 has only the `*at` forms, and none of
    /// x86's port, segment and obsolete calls).
    fn has(self, call: &str) -> bool {
        self == Arch::X86_64 || !X86_64_ONLY.contains(&call)
    }
}

const X86_64_ONLY: &[&str] = &[
    "chmod",
    "open",
    "creat",
    "mknod",
    "iopl",
    "ioperm",
    "modify_ldt",
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
];

/// When a call is refused.
#[derive(Clone, Copy, Debug)]
enum When {
    Always,
    /// Any of these bits is set in argument `.0` (read as 32 bits, as the kernel does).
    AnyBit(u8, &'static [u32]),
    /// Argument `.0` is one of these values.
    OneOf(u8, &'static [u32]),
    /// Argument `.0` is none of these values.
    NoneOf(u8, &'static [u32]),
    /// The flags (`flags`) ask for a new file and its mode (`mode`) is setuid or setgid.
    MakesSetId {
        flags: u8,
        mode: u8,
    },
}

struct Refusal {
    calls: &'static [&'static str],
    when: When,
}

const fn refuse(calls: &'static [&'static str], when: When) -> Refusal {
    Refusal { calls, when }
}

// These values are the same on x86_64 and aarch64 (from the kernel's generic headers).
const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
const SET_ID: &[u32] = &[S_ISUID, S_ISGID];
const O_CREAT: u32 = 0o100;
/// `__O_TMPFILE`, the bit of `O_TMPFILE` without `O_DIRECTORY`.
const O_TMPFILE_BIT: u32 = 0o2000_0000;
const CLONE_NEWNS: u32 = 0x0002_0000;
const CLONE_NEWCGROUP: u32 = 0x0200_0000;
const CLONE_NEWUTS: u32 = 0x0400_0000;
const CLONE_NEWIPC: u32 = 0x0800_0000;
const CLONE_NEWUSER: u32 = 0x1000_0000;
const CLONE_NEWPID: u32 = 0x2000_0000;
const CLONE_NEWNET: u32 = 0x4000_0000;
/// Only for `unshare` (and `clone3`): in `clone`'s flags this bit belongs to the exit signal.
const CLONE_NEWTIME: u32 = 0x0000_0080;
const TIOCSTI: u32 = 0x5412;
const TIOCLINUX: u32 = 0x541c;
/// `personality` values allowed: `PER_LINUX`, `PER_LINUX32`, `UNAME26` (alone and with
/// `PER_LINUX32`), `ADDR_NO_RANDOMIZE` and the query (`0xffffffff`).
const PERSONAS: &[u32] = &[
    0,
    0x0008,
    0x0002_0000,
    0x0002_0008,
    0x0004_0000,
    0xffff_ffff,
];

const EPERM: u32 = libc::EPERM as u32;
const ENOSYS: u32 = libc::ENOSYS as u32;

/// Refused with `EPERM`. Each call appears once.
const REFUSED: &[Refusal] = &[
    refuse(&["add_key", "request_key", "keyctl"], When::Always),
    refuse(&["setns"], When::Always),
    refuse(
        &["unshare"],
        When::AnyBit(
            0,
            &[
                CLONE_NEWNS,
                CLONE_NEWCGROUP,
                CLONE_NEWUTS,
                CLONE_NEWIPC,
                CLONE_NEWUSER,
                CLONE_NEWPID,
                CLONE_NEWNET,
                CLONE_NEWTIME,
            ],
        ),
    ),
    refuse(
        &["clone"],
        When::AnyBit(
            0,
            &[
                CLONE_NEWNS,
                CLONE_NEWCGROUP,
                CLONE_NEWUTS,
                CLONE_NEWIPC,
                CLONE_NEWUSER,
                CLONE_NEWPID,
                CLONE_NEWNET,
            ],
        ),
    ),
    refuse(
        &[
            "mount",
            "umount2",
            "pivot_root",
            "chroot",
            "open_tree",
            "move_mount",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "mount_setattr",
        ],
        When::Always,
    ),
    refuse(
        &[
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "fanotify_init",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
            "get_mempolicy",
            "migrate_pages",
            "move_pages",
        ],
        When::Always,
    ),
    refuse(
        &[
            "init_module",
            "finit_module",
            "delete_module",
            "kexec_load",
            "kexec_file_load",
            "reboot",
            "swapon",
            "swapoff",
            "acct",
            "quotactl",
            "quotactl_fd",
            "settimeofday",
            "clock_settime",
            "clock_adjtime",
            "adjtimex",
            "syslog",
            "vhangup",
            "lookup_dcookie",
            "iopl",
            "ioperm",
            "modify_ldt",
            "uselib",
            "ustat",
            "sysfs",
            "_sysctl",
        ],
        When::Always,
    ),
    refuse(&["name_to_handle_at", "open_by_handle_at"], When::Always),
    refuse(
        &[
            "process_vm_readv",
            "process_vm_writev",
            "kcmp",
            "pidfd_getfd",
        ],
        When::Always,
    ),
    refuse(&["personality"], When::NoneOf(0, PERSONAS)),
    refuse(
        &["chmod", "fchmod", "creat", "mknod"],
        When::AnyBit(1, SET_ID),
    ),
    refuse(
        &["fchmodat", "fchmodat2", "mknodat"],
        When::AnyBit(2, SET_ID),
    ),
    refuse(&["open"], When::MakesSetId { flags: 1, mode: 2 }),
    refuse(&["openat"], When::MakesSetId { flags: 2, mode: 3 }),
    refuse(&["ioctl"], When::OneOf(1, &[TIOCSTI, TIOCLINUX])),
];

/// Answered `ENOSYS`.
const MISSING: &[&str] = &[
    "clone3",
    "openat2",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
];

/// The highest call number the filter was written against (`removexattrat`, Linux 6.13; from
/// 424 on, numbers are the same on every architecture). Higher ones answer `ENOSYS`.
const NEWEST_REVIEWED: u32 = 466;

/// x32 calls are x86_64's with this bit set in the number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// `BPF_MAXINSNS`.
const MAX_INSTRUCTIONS: usize = 4096;

const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JMP_JA: u16 = 0x05; // BPF_JMP | BPF_JA
const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGT_K: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
const BPF_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
/// `struct seccomp_data`: `nr` at 0, `arch` at 4.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;

fn ins(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// The whole program for `arch`.
fn build(arch: Arch) -> Result<BpfProgram, FilterError> {
    let document = json!({
        "missing": part(ENOSYS, missing_rules(arch)),
        "refused": part(EPERM, refused_rules(arch)),
    });
    let mut parts = seccompiler::compile_from_json(document.to_string().as_bytes(), arch.target())?;
    let missing = parts
        .remove("missing")
        .ok_or(FilterError::MissingPart("missing"))?;
    let refused = parts
        .remove("refused")
        .ok_or(FilterError::MissingPart("refused"))?;
    let mut program = prologue(arch);
    program.extend(falling_through(missing));
    program.extend(refused);
    if program.len() > MAX_INSTRUCTIONS {
        return Err(FilterError::TooLong(program.len()));
    }
    Ok(program)
}

/// One part in `seccompiler`'s JSON form: the rules' calls fail with `errno`, the rest are
/// allowed.
fn part(errno: u32, rules: Vec<Value>) -> Value {
    json!({
        "mismatch_action": "allow",
        "match_action": { "errno": errno },
        "filter": rules,
    })
}

fn missing_rules(arch: Arch) -> Vec<Value> {
    MISSING
        .iter()
        .filter(|call| arch.has(call))
        .map(|call| json!({ "syscall": call }))
        .collect()
}

fn refused_rules(arch: Arch) -> Vec<Value> {
    let mut rules = Vec::new();
    for refusal in REFUSED {
        for call in refusal.calls.iter().filter(|call| arch.has(call)) {
            for conditions in alternatives(refusal.when) {
                if conditions.is_empty() {
                    rules.push(json!({ "syscall": call }));
                } else {
                    rules.push(json!({ "syscall": call, "args": conditions }));
                }
            }
        }
    }
    rules
}

/// The rules for `when`: any one matches when all of its conditions do. One empty rule for
/// "always".
fn alternatives(when: When) -> Vec<Vec<Value>> {
    match when {
        When::Always => vec![vec![]],
        When::AnyBit(arg, bits) => bits.iter().map(|&bit| vec![has_bit(arg, bit)]).collect(),
        When::OneOf(arg, values) => values
            .iter()
            .map(|&value| vec![condition(arg, json!("eq"), value)])
            .collect(),
        When::NoneOf(arg, values) => vec![
            values
                .iter()
                .map(|&value| condition(arg, json!("ne"), value))
                .collect(),
        ],
        When::MakesSetId { flags, mode } => [O_CREAT, O_TMPFILE_BIT]
            .iter()
            .flat_map(|&create| {
                SET_ID
                    .iter()
                    .map(move |&bit| vec![has_bit(flags, create), has_bit(mode, bit)])
            })
            .collect(),
    }
}

/// A comparison of argument `arg`'s low 32 bits (all that the kernel reads of an `int`, a mode
/// or flags) with `value`.
fn condition(arg: u8, op: Value, value: u32) -> Value {
    json!({ "index": arg, "type": "dword", "op": op, "val": value })
}

fn has_bit(arg: u8, bit: u32) -> Value {
    condition(arg, json!({ "masked_eq": bit }), bit)
}

/// Refuses another architecture's calls and x32's with `EPERM`, and answers calls newer than
/// the filter with `ENOSYS`; the rest go on to the next part.
fn prologue(arch: Arch) -> BpfProgram {
    let mut program = vec![
        ins(BPF_LD_W_ABS, 0, 0, OFFSET_ARCH),
        ins(BPF_JEQ_K, 1, 0, arch.audit()),
        ins(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM),
        ins(BPF_LD_W_ABS, 0, 0, OFFSET_NR),
    ];
    if arch == Arch::X86_64 {
        program.push(ins(BPF_JGE_K, 0, 1, X32_SYSCALL_BIT));
        program.push(ins(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM));
    }
    program.push(ins(BPF_JGT_K, 0, 1, NEWEST_REVIEWED));
    program.push(ins(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | ENOSYS));
    program
}

/// A compiled part whose "allow" becomes a jump to the instruction just past the part, where
/// the next part starts.
fn falling_through(mut part: BpfProgram) -> BpfProgram {
    let len = part.len();
    for (at, instruction) in part.iter_mut().enumerate() {
        if instruction.code == BPF_RET_K && instruction.k == SECCOMP_RET_ALLOW {
            // A jump lands `k` instructions after the next one.
            let to_end = u32::try_from(len - at - 1).unwrap_or(u32::MAX);
            *instruction = ins(BPF_JMP_JA, 0, 0, to_end);
        }
    }
    part
}

/// `struct sock_filter`s as the kernel (and bubblewrap) read them: native byte order.
fn to_bytes(program: &[sock_filter]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for i in program {
        bytes.extend_from_slice(&i.code.to_ne_bytes());
        bytes.push(i.jt);
        bytes.push(i.jf);
        bytes.extend_from_slice(&i.k.to_ne_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOW: u32 = SECCOMP_RET_ALLOW;
    const DENY: u32 = SECCOMP_RET_ERRNO | EPERM;
    const NOSYS: u32 = SECCOMP_RET_ERRNO | ENOSYS;
    const BPF_ALU_AND_K: u16 = 0x54;

    /// The calls the tests make, per architecture (from the kernel's tables; cross-checked
    /// against libc for this machine below).
    fn nr(arch: Arch, call: &str) -> u32 {
        let table: &[(&str, u32, u32)] = &[
            // (name, x86_64, aarch64)
            ("read", 0, 63),
            ("write", 1, 64),
            ("open", 2, u32::MAX),
            ("ioctl", 16, 29),
            ("clone", 56, 220),
            ("execve", 59, 221),
            ("chmod", 90, u32::MAX),
            ("fchmod", 91, 52),
            ("ptrace", 101, 117),
            ("personality", 135, 92),
            ("mount", 165, 40),
            ("keyctl", 250, 219),
            ("openat", 257, 56),
            ("mknodat", 259, 33),
            ("fchmodat", 268, 53),
            ("unshare", 272, 97),
            ("perf_event_open", 298, 241),
            ("setns", 308, 268),
            ("process_vm_readv", 310, 270),
            ("bpf", 321, 280),
            ("userfaultfd", 323, 282),
            ("io_uring_setup", 425, 425),
            ("fsopen", 430, 430),
            ("clone3", 435, 435),
            ("openat2", 437, 437),
            ("fchmodat2", 452, 452),
            ("mseal", 462, 462),
            ("open_tree_attr", 467, 467),
        ];
        let &(_, x86, arm) = table
            .iter()
            .find(|(name, ..)| *name == call)
            .unwrap_or_else(|| panic!("no number for {call}"));
        match arch {
            Arch::X86_64 => x86,
            Arch::Aarch64 => arm,
        }
    }

    /// Runs the program (as the bytes bubblewrap gets) over a `seccomp_data` the way the
    /// kernel would.
    fn run(program: &[u8], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        assert_eq!(program.len() % 8, 0);
        let ins: Vec<sock_filter> = program
            .chunks(8)
            .map(|c| sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        // struct seccomp_data: nr, arch, instruction_pointer, args[6]; little-endian.
        let mut data = Vec::new();
        data.extend_from_slice(&nr.to_le_bytes());
        data.extend_from_slice(&arch.to_le_bytes());
        data.extend_from_slice(&0u64.to_le_bytes());
        for arg in args {
            data.extend_from_slice(&arg.to_le_bytes());
        }
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = &ins[pc];
            match i.code {
                BPF_LD_W_ABS => {
                    let at = i.k as usize;
                    acc = u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
                }
                BPF_ALU_AND_K => acc &= i.k,
                BPF_JMP_JA => pc += i.k as usize,
                BPF_JEQ_K => pc += if acc == i.k { i.jt } else { i.jf } as usize,
                BPF_JGT_K => pc += if acc > i.k { i.jt } else { i.jf } as usize,
                BPF_JGE_K => pc += if acc >= i.k { i.jt } else { i.jf } as usize,
                BPF_RET_K => return i.k,
                other => panic!("unknown instruction {other:#x} at {pc}"),
            }
            pc += 1;
        }
    }

    struct Filter {
        arch: Arch,
        bytes: Vec<u8>,
    }

    impl Filter {
        fn new(arch: Arch) -> Filter {
            Filter {
                arch,
                bytes: to_bytes(&build(arch).expect("the filter builds")),
            }
        }

        fn call(&self, call: &str, args: &[u64]) -> u32 {
            let mut all = [0u64; 6];
            all[..args.len()].copy_from_slice(args);
            run(&self.bytes, self.arch.audit(), nr(self.arch, call), all)
        }
    }

    fn both() -> [Filter; 2] {
        [Filter::new(Arch::X86_64), Filter::new(Arch::Aarch64)]
    }

    const AT_FDCWD: u64 = -100i64 as u64;
    const O_WRONLY: u64 = 1;
    const SIGCHLD: u64 = 17;

    #[test]
    fn builds_for_both_architectures_within_the_kernels_limit() {
        for arch in [Arch::X86_64, Arch::Aarch64] {
            let program = build(arch).unwrap();
            assert!(program.len() <= MAX_INSTRUCTIONS, "{arch:?}");
            assert_eq!(program.last().unwrap().code, BPF_RET_K);
        }
        let native = try_program().unwrap();
        assert_eq!(program(), Some(native));
    }

    #[test]
    fn each_call_has_one_rule_set() {
        let mut seen: Vec<&str> = MISSING.to_vec();
        for refusal in REFUSED {
            seen.extend(refusal.calls);
        }
        let count = seen.len();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), count, "a call is listed twice");
    }

    #[test]
    fn the_test_numbers_are_this_machines() {
        let Some(arch) = Arch::native() else {
            return;
        };
        let check = |call: &str, libc: libc::c_long| assert_eq!(nr(arch, call) as i64, libc);
        check("clone", libc::SYS_clone);
        check("unshare", libc::SYS_unshare);
        check("openat", libc::SYS_openat);
        check("fchmodat", libc::SYS_fchmodat);
        check("bpf", libc::SYS_bpf);
        check("perf_event_open", libc::SYS_perf_event_open);
        check("io_uring_setup", libc::SYS_io_uring_setup);
        check("clone3", libc::SYS_clone3);
        check("keyctl", libc::SYS_keyctl);
        assert_eq!(S_ISUID, libc::S_ISUID);
        assert_eq!(S_ISGID, libc::S_ISGID);
        assert_eq!(O_CREAT as i32, libc::O_CREAT);
        assert_eq!((O_TMPFILE_BIT as i32) | libc::O_DIRECTORY, libc::O_TMPFILE);
        assert_eq!(CLONE_NEWUSER as i32, libc::CLONE_NEWUSER);
        assert_eq!(CLONE_NEWNS as i32, libc::CLONE_NEWNS);
        assert_eq!(TIOCSTI as libc::Ioctl, libc::TIOCSTI);
        assert_eq!(EPERM, 1);
        assert_eq!(ENOSYS, 38);
    }

    #[test]
    fn unconditional_refusals() {
        for f in both() {
            for call in [
                "keyctl",
                "mount",
                "fsopen",
                "setns",
                "bpf",
                "perf_event_open",
                "userfaultfd",
                "process_vm_readv",
            ] {
                assert_eq!(f.call(call, &[]), DENY, "{call} on {:?}", f.arch);
            }
            for call in ["clone3", "openat2", "io_uring_setup", "open_tree_attr"] {
                assert_eq!(f.call(call, &[]), NOSYS, "{call} on {:?}", f.arch);
            }
            for call in ["read", "write", "execve", "ptrace", "mseal"] {
                assert_eq!(f.call(call, &[]), ALLOW, "{call} on {:?}", f.arch);
            }
        }
    }

    #[test]
    fn namespaces_are_refused_threads_and_forks_are_not() {
        let newuser = u64::from(CLONE_NEWUSER);
        for f in both() {
            assert_eq!(f.call("unshare", &[newuser]), DENY);
            assert_eq!(f.call("unshare", &[u64::from(CLONE_NEWNS)]), DENY);
            assert_eq!(f.call("unshare", &[u64::from(CLONE_NEWTIME)]), DENY);
            // Only the low 32 bits count, for the kernel and for the filter.
            assert_eq!(f.call("unshare", &[(1 << 32) | newuser]), DENY);
            // CLONE_FILES, CLONE_FS: no namespace.
            assert_eq!(f.call("unshare", &[0x400]), ALLOW);
            assert_eq!(f.call("unshare", &[0x200]), ALLOW);
            assert_eq!(f.call("clone", &[newuser | SIGCHLD]), DENY);
            assert_eq!(f.call("clone", &[u64::from(CLONE_NEWPID) | SIGCHLD]), DENY);
            // glibc's pthread_create and fork.
            assert_eq!(f.call("clone", &[0x003d_0f00]), ALLOW);
            assert_eq!(f.call("clone", &[0x0120_0000 | SIGCHLD]), ALLOW);
            // A signal number above 127 is not CLONE_NEWTIME for clone.
            assert_eq!(f.call("clone", &[0x80]), ALLOW);
        }
    }

    #[test]
    fn no_setuid_or_setgid_files() {
        for f in both() {
            for mode in [0o4755, 0o2755, 0o6755, 0o4000, 0o2000] {
                assert_eq!(f.call("fchmod", &[3, mode]), DENY, "{mode:o}");
                assert_eq!(f.call("fchmodat", &[AT_FDCWD, 0, mode]), DENY, "{mode:o}");
                assert_eq!(f.call("fchmodat2", &[AT_FDCWD, 0, mode, 0]), DENY);
                let creating = O_WRONLY | u64::from(O_CREAT);
                assert_eq!(f.call("openat", &[AT_FDCWD, 0, creating, mode]), DENY);
                let tmpfile = O_WRONLY | u64::from(O_TMPFILE_BIT) | 0o200000;
                assert_eq!(f.call("openat", &[AT_FDCWD, 0, tmpfile, mode]), DENY);
                assert_eq!(f.call("mknodat", &[AT_FDCWD, 0, 0o100000 | mode]), DENY);
                // Opening without making a file: the mode is ignored.
                assert_eq!(f.call("openat", &[AT_FDCWD, 0, O_WRONLY, mode]), ALLOW);
            }
            for mode in [0o755, 0o644, 0o1777, 0o777] {
                assert_eq!(f.call("fchmod", &[3, mode]), ALLOW, "{mode:o}");
                assert_eq!(f.call("fchmodat", &[AT_FDCWD, 0, mode]), ALLOW);
                assert_eq!(f.call("fchmodat2", &[AT_FDCWD, 0, mode, 0]), ALLOW);
                let creating = O_WRONLY | u64::from(O_CREAT);
                assert_eq!(f.call("openat", &[AT_FDCWD, 0, creating, mode]), ALLOW);
                assert_eq!(f.call("mknodat", &[AT_FDCWD, 0, 0o010000 | mode]), ALLOW);
            }
        }
        let x86 = Filter::new(Arch::X86_64);
        assert_eq!(x86.call("chmod", &[0, 0o4755]), DENY);
        assert_eq!(x86.call("chmod", &[0, 0o755]), ALLOW);
        assert_eq!(x86.call("open", &[0, u64::from(O_CREAT), 0o2755]), DENY);
        assert_eq!(x86.call("open", &[0, u64::from(O_CREAT), 0o644]), ALLOW);
    }

    #[test]
    fn personalities_and_terminal_injection() {
        for f in both() {
            for persona in [0, 0x8, 0x20000, 0x40000, 0xffff_ffff] {
                assert_eq!(f.call("personality", &[persona]), ALLOW, "{persona:#x}");
            }
            // READ_IMPLIES_EXEC, MMAP_PAGE_ZERO, ADDR_COMPAT_LAYOUT.
            for persona in [0x0040_0000, 0x0010_0000, 0x0020_0000] {
                assert_eq!(f.call("personality", &[persona]), DENY, "{persona:#x}");
            }
            assert_eq!(f.call("ioctl", &[0, u64::from(TIOCSTI)]), DENY);
            assert_eq!(f.call("ioctl", &[0, u64::from(TIOCLINUX)]), DENY);
            // TCGETS.
            assert_eq!(f.call("ioctl", &[0, 0x5401]), ALLOW);
        }
    }

    #[test]
    fn foreign_architectures_and_x32_are_refused() {
        for f in both() {
            // i386's keyctl, and i386's read.
            assert_eq!(run(&f.bytes, 0x4000_0003, 288, [0; 6]), DENY);
            assert_eq!(run(&f.bytes, 0x4000_0003, 3, [0; 6]), DENY);
        }
        let x86 = Filter::new(Arch::X86_64);
        assert_eq!(
            run(&x86.bytes, Arch::X86_64.audit(), X32_SYSCALL_BIT, [0; 6]),
            DENY
        );
        assert_eq!(
            run(
                &x86.bytes,
                Arch::X86_64.audit(),
                X32_SYSCALL_BIT | 250,
                [0; 6]
            ),
            DENY
        );
        let arm = Filter::new(Arch::Aarch64);
        assert_eq!(
            run(&arm.bytes, Arch::X86_64.audit(), 63, [0; 6]),
            DENY,
            "x86_64 calls under the aarch64 filter"
        );
    }
}
