//! A worker's credential (`MCW1-<64 hex>`): the secret the manager makes at a worker's
//! first registration and its agent presents from then on (see the core's `identity`).
//! Both sides need its hash — the manager keeps only that, and presents it to the agent's
//! logs endpoint; the agent compares it with its own — so it lives here, beside the calls
//! that carry it (and the join token's, which gets workers their credentials).

/// What every credential begins with: the manager tells a credential from a token by it.
pub const PREFIX: &str = "MCW1-";

/// A new credential: `MCW1-` and 32 random bytes in hex.
pub fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{PREFIX}{}", hex(&bytes))
}

/// Whether `text` is shaped like a credential (not whether any worker has it).
pub fn is_credential(text: &str) -> bool {
    text.strip_prefix(PREFIX)
        .is_some_and(|rest| rest.len() == 64 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The SHA-256 of a credential (of its whole text), in lowercase hex: what the worker's
/// record holds.
pub fn hash(credential: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, credential.as_bytes()).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_random_and_hash_to_64_hex_digits() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(is_credential(&a), "{a}");
        assert!(!is_credential("MCW1-abc"));
        assert!(!is_credential("join-token-0123456789"));
        assert_eq!(hash(&a).len(), 64);
        assert_eq!(hash(&a), hash(&a));
        // `printf %s abc | sha256sum`
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
