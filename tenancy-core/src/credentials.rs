//! Secrets: generation from the OS CSPRNG, bcrypt hashing, constant-time checks.
//!
//! A secret looks like `<prefix>_<32 base62 chars><6 base62 checksum>`
//! (about 190 bits of entropy). The checksum is the CRC32 of everything
//! before it, as GitHub's and Zuplo's tokens carry one: a secret scanner
//! can recognize a tenancy secret without asking anyone, and a mistyped
//! one is refused before any store read ([`parse_secret`]). Secrets made
//! before the checksum (`<prefix>_<32 base62 chars>`) keep working. A
//! secret is shown once and never stored: the registry keeps only a bcrypt
//! hash and a non-secret [`lookup_id`] that lets a server find the tenant
//! of a presented key without scanning tenants.

use std::fmt;

use rand::rngs::OsRng;
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use crate::error::{Error, Result};

/// Length of the random part of a secret.
pub const SECRET_RANDOM_LEN: usize = 32;
/// Length of the checksum that ends a secret.
pub const SECRET_CHECKSUM_LEN: usize = 6;
/// The prefix used when a tenant has none of its own.
pub const DEFAULT_SECRET_PREFIX: &str = "tnc";
/// The default bcrypt cost (2^10 rounds).
pub const DEFAULT_BCRYPT_COST: u32 = 10;
/// The smallest bcrypt cost accepted.
pub const MIN_BCRYPT_COST: u32 = 4;
/// The largest bcrypt cost accepted.
pub const MAX_BCRYPT_COST: u32 = 31;

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A secret value (tenant secret, admin password, API key).
///
/// Zeroized on drop; `Debug` and `Display` never show it. Read it with
/// [`Secret::expose`] only where it must leave the process (shown once to
/// the user, or hashed). `==` compares in constant time
/// ([`constant_time_eq`]).
#[derive(Clone, Eq)]
pub struct Secret(String);

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(self.0.as_bytes(), other.0.as_bytes())
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret's value. Keep the borrow short.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The prefix before the first `_`, if the secret has the tenancy format.
    pub fn prefix(&self) -> Option<&str> {
        parse_secret(&self.0).map(|(p, _)| p)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Checks a secret prefix: 2 to 8 lowercase ASCII letters.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    if (2..=8).contains(&prefix.len()) && prefix.bytes().all(|b| b.is_ascii_lowercase()) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "secret prefix \"{}\" must be 2 to 8 lowercase letters",
            prefix.escape_debug()
        )))
    }
}

/// Splits a secret into `(prefix, the part after the '_')` if it has the
/// tenancy format: 32 base62 characters (a secret made before checksums),
/// or 32 and a checksum that matches ([`has_checksum`]). `None` for
/// anything else, a mistyped checksummed secret included.
pub fn parse_secret(s: &str) -> Option<(&str, &str)> {
    let (prefix, rest) = s.split_once('_')?;
    if validate_prefix(prefix).is_err() || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    match rest.len() {
        SECRET_RANDOM_LEN => Some((prefix, rest)),
        n if n == SECRET_RANDOM_LEN + SECRET_CHECKSUM_LEN => {
            has_checksum(s).then_some((prefix, rest))
        }
        _ => None,
    }
}

/// True when `s` ends in the checksum of the rest of it (the format of
/// secrets and API keys made since checksums; see the module docs).
pub fn has_checksum(s: &str) -> bool {
    let Some(split) = s.len().checked_sub(SECRET_CHECKSUM_LEN) else {
        return false;
    };
    match (s.get(..split), s.get(split..)) {
        (Some(body), Some(sum)) => constant_time_eq(checksum(body).as_bytes(), sum.as_bytes()),
        _ => false,
    }
}

/// True for a secret of the checksummed shape (`<prefix>_` and 38 base62
/// characters) whose checksum does not match: mistyped or cut, and worth
/// saying so rather than "wrong secret".
pub fn is_mistyped(s: &str) -> bool {
    let Some((prefix, rest)) = s.split_once('_') else {
        return false;
    };
    validate_prefix(prefix).is_ok()
        && rest.len() == SECRET_RANDOM_LEN + SECRET_CHECKSUM_LEN
        && rest.bytes().all(|b| b.is_ascii_alphanumeric())
        && !has_checksum(s)
}

/// The checksum of `body`: its CRC32 in 6 base62 characters.
fn checksum(body: &str) -> String {
    let mut n = u64::from(crc32fast::hash(body.as_bytes()));
    let mut out = [b'0'; SECRET_CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out.iter().map(|&b| b as char).collect()
}

/// Generates a new secret `<prefix>_<32 base62 chars><checksum>` from the
/// OS CSPRNG.
pub fn generate_secret(prefix: &str) -> Result<Secret> {
    validate_prefix(prefix)?;
    let mut s = String::with_capacity(prefix.len() + 1 + SECRET_RANDOM_LEN + SECRET_CHECKSUM_LEN);
    s.push_str(prefix);
    s.push('_');
    push_random_base62(&mut s, SECRET_RANDOM_LEN);
    let sum = checksum(&s);
    s.push_str(&sum);
    Ok(Secret(s))
}

/// Appends `n` base62 characters from the OS CSPRNG (about 5.95 bits each).
pub(crate) fn push_random_base62(s: &mut String, n: usize) {
    let mut rng = OsRng;
    for _ in 0..n {
        s.push(BASE62[rng.gen_range(0..BASE62.len())] as char);
    }
}

/// True for `n` characters of `0-9 A-Z a-z`.
pub(crate) fn is_base62(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Hashes a secret with bcrypt at `cost`.
pub fn hash_secret(secret: &Secret, cost: u32) -> Result<String> {
    if !(MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&cost) {
        return Err(Error::invalid(format!(
            "bcrypt cost {cost} is outside {MIN_BCRYPT_COST}..={MAX_BCRYPT_COST}"
        )));
    }
    bcrypt::hash(secret.expose(), cost).map_err(|e| Error::backend("bcrypt", e))
}

/// Verifies a presented secret against a bcrypt hash (constant time inside bcrypt).
///
/// A malformed hash counts as a mismatch, never as a match.
pub fn verify_secret(presented: &str, hash: &str) -> bool {
    bcrypt::verify(presented, hash).unwrap_or(false)
}

/// A bcrypt hash of a random value, for verifying against when the tenant is
/// unknown, so that an unknown id costs the same time as a wrong secret.
pub fn dummy_hash(cost: u32) -> Result<String> {
    let secret = generate_secret(DEFAULT_SECRET_PREFIX)?;
    hash_secret(&secret, cost)
}

/// SHA-256 of a value, hex encoded.
pub fn sha256_hex(value: &[u8]) -> String {
    let digest = Sha256::digest(value);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The non-secret lookup id of a secret: the first 32 hex chars of its SHA-256.
///
/// Stored in the credential record and as the name of an index object, so
/// a presented key resolves to its tenant with one read. Knowing it does
/// not help an attacker: the secret has ~190 random bits.
pub fn lookup_id(secret: &str) -> String {
    let mut h = sha256_hex(secret.as_bytes());
    h.truncate(32);
    h
}

/// Compares two byte strings in constant time.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn secrets_have_the_format_and_differ() {
        let a = generate_secret("ntfy").unwrap();
        let b = generate_secret("ntfy").unwrap();
        assert_ne!(a, b);
        let (p, r) = parse_secret(a.expose()).unwrap();
        assert_eq!(p, "ntfy");
        assert_eq!(r.len(), SECRET_RANDOM_LEN + SECRET_CHECKSUM_LEN);
        assert!(has_checksum(a.expose()));
    }

    #[test]
    fn a_mistyped_secret_fails_its_checksum_and_old_secrets_still_parse() {
        let s = generate_secret("tnc").unwrap();
        let text = s.expose().to_string();
        // every single-character change in the random part or the checksum
        for i in 4..text.len() {
            let mut typo = text.clone().into_bytes();
            typo[i] = if typo[i] == b'a' { b'b' } else { b'a' };
            let typo = String::from_utf8(typo).unwrap();
            assert!(parse_secret(&typo).is_none(), "{i}");
        }
        // two swapped neighbours
        let mut swapped = text.clone().into_bytes();
        swapped.swap(10, 11);
        let swapped = String::from_utf8(swapped).unwrap();
        if swapped != text {
            assert!(parse_secret(&swapped).is_none());
        }
        // a secret made before checksums: 32 characters, no checksum
        let old = format!("tnc_{}", "A".repeat(SECRET_RANDOM_LEN));
        assert!(parse_secret(&old).is_some());
        assert!(!has_checksum(&old));
        // neither 32 nor 38
        assert!(parse_secret(&format!("tnc_{}", "A".repeat(35))).is_none());
        assert!(is_mistyped(&format!("{}x", &text[..text.len() - 1])) || text.ends_with('x'));
        assert!(!is_mistyped(&text));
        assert!(!is_mistyped(&old));
    }

    #[test]
    fn prefixes() {
        for ok in ["ab", "ntfy", "abcdefgh"] {
            validate_prefix(ok).unwrap();
        }
        for bad in ["a", "abcdefghi", "Ab", "a1", "a_b", ""] {
            assert!(validate_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hash_and_verify() {
        let s = generate_secret("tnc").unwrap();
        let h = hash_secret(&s, MIN_BCRYPT_COST).unwrap();
        assert!(verify_secret(s.expose(), &h));
        assert!(!verify_secret("tnc_wrong", &h));
        assert!(!verify_secret(s.expose(), "not a hash"));
        assert!(hash_secret(&s, 3).is_err());
    }

    #[test]
    fn secret_never_shows() {
        let s = Secret::new("tnc_supersecretvalue");
        assert!(!format!("{s:?}").contains("supersecret"));
        assert!(!format!("{s}").contains("supersecret"));
    }

    #[test]
    fn secrets_compare_by_value() {
        let a = Secret::new("tnc_abcdef");
        assert_eq!(a, Secret::new("tnc_abcdef"));
        assert_ne!(a, Secret::new("tnc_abcdeg"));
        assert_ne!(a, Secret::new("tnc_abcde"));
        assert_ne!(a, Secret::new(""));
    }

    #[test]
    fn lookup_ids_are_stable_and_short() {
        assert_eq!(lookup_id("a"), lookup_id("a"));
        assert_ne!(lookup_id("a"), lookup_id("b"));
        assert_eq!(lookup_id("x").len(), 32);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
    }

    proptest! {
        #[test]
        fn secret_format_round_trips(prefix in "[a-z]{2,8}") {
            let s = generate_secret(&prefix).unwrap();
            let (p, rest) = parse_secret(s.expose()).unwrap();
            prop_assert_eq!(p, prefix.as_str());
            prop_assert_eq!(rest.len(), SECRET_RANDOM_LEN + SECRET_CHECKSUM_LEN);
            prop_assert_eq!(s.prefix(), Some(prefix.as_str()));
        }
    }
}
