//! Small cryptographic helpers: random secrets, hashing, constant-time comparison.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// `bytes` random bytes from the OS as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random number generator is available");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Compares two secrets without leaking, through timing, how much of them matched.
pub fn secrets_match(a: &[u8], b: &[u8]) -> bool {
    // Hashing first makes the comparison independent of the lengths as well.
    bool::from(sha256(a).ct_eq(&sha256(b)))
}
