//! The seccomp filter local sandboxes run under: a classic BPF program for `bwrap --seccomp`.
//!
//! It refuses (with `EPERM`) the kernel keyring calls (`add_key`, `request_key`, `keyctl`): a
//! sandbox runs as the server's user seen from inside, so without the filter it could read keys
//! in that user's keyring, where the proxy may keep real credentials. It also refuses the x32
//! system call ABI, which would otherwise get around per-number rules. Everything else is left
//! to the namespaces and the read-only file system.

/// `struct sock_filter`: one instruction.
#[derive(Clone, Copy)]
struct Instruction {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K

const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const EPERM: u32 = 1;

/// `struct seccomp_data`: `nr` at 0, `arch` at 4.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// (add_key, request_key, keyctl) per architecture.
const KEYRING_CALLS: [(u32, [u32; 3]); 2] = [
    (AUDIT_ARCH_X86_64, [248, 249, 250]),
    (AUDIT_ARCH_AARCH64, [217, 218, 219]),
];

fn ins(code: u16, jt: u8, jf: u8, k: u32) -> Instruction {
    Instruction { code, jt, jf, k }
}

/// This machine's architecture as the kernel names it, where the filter knows its calls.
fn native_arch() -> Option<u32> {
    if cfg!(target_arch = "x86_64") {
        Some(AUDIT_ARCH_X86_64)
    } else if cfg!(target_arch = "aarch64") {
        Some(AUDIT_ARCH_AARCH64)
    } else {
        None
    }
}

/// The program for this machine's architecture, as bytes for `bwrap --seccomp`; `None` on an
/// architecture whose system call numbers it does not know.
pub fn program() -> Option<Vec<u8>> {
    let arch = native_arch()?;
    let calls = KEYRING_CALLS
        .iter()
        .find(|(a, _)| *a == arch)
        .map(|(_, calls)| *calls)?;
    let deny = SECCOMP_RET_ERRNO | EPERM;
    let mut program = vec![
        // Another architecture's calls (a 32-bit binary) are refused outright.
        ins(BPF_LD_W_ABS, 0, 0, OFFSET_ARCH),
        ins(BPF_JEQ_K, 1, 0, arch),
        ins(BPF_RET_K, 0, 0, deny),
        ins(BPF_LD_W_ABS, 0, 0, OFFSET_NR),
    ];
    if arch == AUDIT_ARCH_X86_64 {
        program.push(ins(BPF_JGE_K, 0, 1, X32_SYSCALL_BIT));
        program.push(ins(BPF_RET_K, 0, 0, deny));
    }
    for call in calls {
        program.push(ins(BPF_JEQ_K, 0, 1, call));
        program.push(ins(BPF_RET_K, 0, 0, deny));
    }
    program.push(ins(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW));
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for i in program {
        bytes.extend_from_slice(&i.code.to_ne_bytes());
        bytes.push(i.jt);
        bytes.push(i.jf);
        bytes.extend_from_slice(&i.k.to_ne_bytes());
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the program over a `seccomp_data` the way the kernel would.
    fn run(program: &[u8], arch: u32, nr: u32) -> u32 {
        let ins: Vec<Instruction> = program
            .chunks(8)
            .map(|c| Instruction {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = ins[pc];
            match i.code {
                BPF_LD_W_ABS => acc = if i.k == OFFSET_NR { nr } else { arch },
                BPF_JEQ_K => {
                    pc += if acc == i.k { i.jt } else { i.jf } as usize;
                }
                BPF_JGE_K => {
                    pc += if acc >= i.k { i.jt } else { i.jf } as usize;
                }
                BPF_RET_K => return i.k,
                other => panic!("unknown instruction {other:#x}"),
            }
            pc += 1;
        }
    }

    #[test]
    fn keyring_calls_and_foreign_abis_are_refused_the_rest_allowed() {
        let Some(program) = program() else {
            return;
        };
        let deny = SECCOMP_RET_ERRNO | EPERM;
        let arch = native_arch().unwrap();
        let keyring = KEYRING_CALLS.iter().find(|(a, _)| *a == arch).unwrap().1;
        for call in keyring {
            assert_eq!(run(&program, arch, call), deny, "call {call}");
        }
        for call in [0, 1, 2, 59, 60, 231, 435] {
            assert_eq!(run(&program, arch, call), SECCOMP_RET_ALLOW, "call {call}");
        }
        assert_eq!(run(&program, 0x4000_0003, 250), deny, "i386");
        if arch == AUDIT_ARCH_X86_64 {
            assert_eq!(run(&program, arch, X32_SYSCALL_BIT | 250), deny, "x32");
        }
    }
}
