//! Validated identifiers and keys: `TenantId`, `StateKey`, `LockKey`.
//!
//! Every key that reaches a backend passes through one of these types, so a
//! crafted key can never name an object outside its tenant's prefix.
//!
//! # Character sets
//!
//! - **TenantId**: lowercase DNS label: `a-z`, `0-9`, `-`; 3 to 63 characters;
//!   starts with a letter, ends with a letter or digit; reserved words
//!   ([`RESERVED_TENANT_IDS`]) refused.
//! - **StateKey**: `/`-separated segments. Each segment is 1 to
//!   [`MAX_SEGMENT_LEN`] bytes of `A-Z a-z 0-9 . _ - : = @`, and must not
//!   start with `.` (so `.`, `..` and hidden names are impossible). The whole
//!   key is at most [`MAX_KEY_LEN`] bytes. No leading or trailing `/`, no empty
//!   segment, no `%`, no backslash, no whitespace or control characters.
//! - **LockKey**: `:`-separated segments of `A-Z a-z 0-9 . _ -`, none empty
//!   and none starting with `.`; at most [`MAX_LOCK_KEY_LEN`] bytes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The longest state key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// The longest segment of a state key, in bytes.
pub const MAX_SEGMENT_LEN: usize = 255;
/// The longest lock key, in bytes.
pub const MAX_LOCK_KEY_LEN: usize = 512;
/// Tenant ids that can never be created.
pub const RESERVED_TENANT_IDS: &[&str] = &[
    "default", "admin", "root", "system", "tenancy", "registry", "archive", "locks", "tenants",
    "api", "www",
];

fn shown(s: &str) -> String {
    const MAX: usize = 64;
    let mut out: String = s.chars().take(MAX).flat_map(char::escape_debug).collect();
    if s.chars().count() > MAX {
        out.push_str("...");
    }
    out
}

/// A tenant id: a lowercase DNS label of 3 to 63 characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TenantId {
    /// Validates and wraps a tenant id.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        let bad = |why: &str| {
            Err(Error::invalid(format!(
                "tenant id \"{}\" {why}",
                shown(&id)
            )))
        };
        if id.len() < 3 || id.len() > 63 {
            return bad("must be 3 to 63 characters long");
        }
        if !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return bad("may only contain lowercase letters, digits and '-'");
        }
        if !id.as_bytes()[0].is_ascii_lowercase() {
            return bad("must start with a lowercase letter");
        }
        if id.ends_with('-') {
            return bad("must not end with '-'");
        }
        if RESERVED_TENANT_IDS.contains(&id.as_str()) {
            return bad("is reserved");
        }
        Ok(TenantId(id))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TenantId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        TenantId::new(s)
    }
}

impl TryFrom<String> for TenantId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        TenantId::new(s)
    }
}

impl From<TenantId> for String {
    fn from(id: TenantId) -> String {
        id.0
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

fn segment_char_ok(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'=' | b'@')
}

fn check_segment(key: &str, seg: &str) -> Result<()> {
    let bad = |why: String| {
        Err(Error::invalid(format!(
            "state key \"{}\" {why}",
            shown(key)
        )))
    };
    if seg.is_empty() {
        return bad("has an empty segment (leading, trailing or double '/')".into());
    }
    if seg.len() > MAX_SEGMENT_LEN {
        return bad(format!("has a segment longer than {MAX_SEGMENT_LEN} bytes"));
    }
    if seg.starts_with('.') {
        return bad(format!(
            "has a segment starting with '.' (\"{}\"): '.', '..' and hidden names are refused",
            shown(seg)
        ));
    }
    if let Some(c) = seg
        .chars()
        .find(|c| !(c.is_ascii() && segment_char_ok(*c as u8)))
    {
        return bad(format!(
            "contains {:?}; allowed are A-Z a-z 0-9 . _ - : = @ and '/' between segments",
            c
        ));
    }
    Ok(())
}

/// A validated, relative, `/`-separated object key.
///
/// See the [module docs](self) for the character set. Joining two valid keys
/// gives a valid key that starts with the first, so a prefix applied with
/// [`StateKey::join`] can never be escaped.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StateKey(String);

impl StateKey {
    /// Validates and wraps a key.
    pub fn new(key: impl Into<String>) -> Result<Self> {
        let key = key.into();
        if key.is_empty() {
            return Err(Error::invalid("state key is empty"));
        }
        if key.len() > MAX_KEY_LEN {
            return Err(Error::invalid(format!(
                "state key \"{}\" is {} bytes long; the limit is {MAX_KEY_LEN}",
                shown(&key),
                key.len()
            )));
        }
        if key.starts_with('/') {
            return Err(Error::invalid(format!(
                "state key \"{}\" is absolute; keys are relative",
                shown(&key)
            )));
        }
        for seg in key.split('/') {
            check_segment(&key, seg)?;
        }
        Ok(StateKey(key))
    }

    /// Validates one segment (e.g. a stack or environment name) and returns it as a key.
    pub fn segment(name: &str) -> Result<Self> {
        if name.contains('/') {
            return Err(Error::invalid(format!(
                "name \"{}\" must be a single segment without '/'",
                shown(name)
            )));
        }
        StateKey::new(name)
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Appends `other` below this key: `a/b` join `c/d` is `a/b/c/d`.
    pub fn join(&self, other: &StateKey) -> Result<StateKey> {
        // on every scoped call: one exact allocation, no formatting machinery
        let len = self.0.len() + 1 + other.0.len();
        if len > MAX_KEY_LEN {
            let joined = format!("{}/{}", self.0, other.0);
            return Err(Error::invalid(format!(
                "state key \"{}\" would be {len} bytes long; the limit is {MAX_KEY_LEN}",
                shown(&joined)
            )));
        }
        let mut joined = String::with_capacity(len);
        joined.push_str(&self.0);
        joined.push('/');
        joined.push_str(&other.0);
        Ok(StateKey(joined))
    }

    /// Validates `rest` and appends it: shorthand for `join(&StateKey::new(rest)?)`.
    pub fn child(&self, rest: &str) -> Result<StateKey> {
        self.join(&StateKey::new(rest)?)
    }

    /// True when this key lies strictly below `prefix` (segment-wise).
    pub fn is_under(&self, prefix: &StateKey) -> bool {
        self.0.len() > prefix.0.len()
            && self.0.starts_with(&prefix.0)
            && self.0.as_bytes()[prefix.0.len()] == b'/'
    }

    /// The part of this key below `prefix`, if it lies below it.
    pub fn strip_prefix(&self, prefix: &StateKey) -> Option<StateKey> {
        if self.is_under(prefix) {
            Some(StateKey(self.0[prefix.0.len() + 1..].to_string()))
        } else {
            None
        }
    }

    /// The segments of the key.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The last segment.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for StateKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        StateKey::new(s)
    }
}

impl TryFrom<String> for StateKey {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        StateKey::new(s)
    }
}

impl TryFrom<&str> for StateKey {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        StateKey::new(s)
    }
}

impl From<StateKey> for String {
    fn from(k: StateKey) -> String {
        k.0
    }
}

impl AsRef<str> for StateKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A validated lock key: `:`-separated segments, e.g. `stack:web:env:prod`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LockKey(String);

impl LockKey {
    /// Validates and wraps a lock key.
    pub fn new(key: impl Into<String>) -> Result<Self> {
        let key = key.into();
        let bad = |why: String| {
            Err(Error::invalid(format!(
                "lock key \"{}\" {why}",
                shown(&key)
            )))
        };
        if key.is_empty() {
            return Err(Error::invalid("lock key is empty"));
        }
        if key.len() > MAX_LOCK_KEY_LEN {
            return bad(format!(
                "is {} bytes long; the limit is {MAX_LOCK_KEY_LEN}",
                key.len()
            ));
        }
        for seg in key.split(':') {
            if seg.is_empty() {
                return bad("has an empty segment (leading, trailing or double ':')".into());
            }
            if seg.starts_with('.') {
                return bad("has a segment starting with '.'".into());
            }
            if let Some(c) = seg
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            {
                return bad(format!(
                    "contains {c:?}; allowed are A-Z a-z 0-9 . _ - and ':' between segments"
                ));
            }
        }
        Ok(LockKey(key))
    }

    /// The lock key of a stack environment: `stack:<stack>:env:<env>`.
    pub fn stack_env(stack: &str, env: &str) -> Result<Self> {
        for (what, v) in [("stack", stack), ("env", env)] {
            if v.contains(':') || v.contains('/') {
                return Err(Error::invalid(format!(
                    "{what} name \"{}\" must not contain ':' or '/'",
                    shown(v)
                )));
            }
        }
        LockKey::new(format!("stack:{stack}:env:{env}"))
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Puts `prefix:` in front of this key.
    pub fn prefixed(&self, prefix: &str) -> Result<LockKey> {
        LockKey::new(format!("{prefix}:{}", self.0))
    }

    /// The part after `prefix:`, if this key starts with it.
    pub fn strip_prefix(&self, prefix: &str) -> Option<LockKey> {
        self.0
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix(':'))
            .filter(|rest| !rest.is_empty())
            .map(|rest| LockKey(rest.to_string()))
    }
}

impl fmt::Display for LockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for LockKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        LockKey::new(s)
    }
}

impl TryFrom<String> for LockKey {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        LockKey::new(s)
    }
}

impl From<LockKey> for String {
    fn from(k: LockKey) -> String {
        k.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tenant_ids() {
        for ok in ["acme", "abc", "a1-b2", "team-42", &"a".repeat(63)] {
            TenantId::new(ok).unwrap();
        }
        for bad in [
            "",
            "ab",
            "Acme",
            "1abc",
            "abc-",
            "a_b",
            "a.b",
            "default",
            "admin",
            "ac me",
            &"a".repeat(64),
            "acmé",
        ] {
            let err = TenantId::new(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidInput { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn state_keys_refused() {
        let long = "a".repeat(10 * 1024);
        for bad in [
            "", "..", ".", "a/../b", "../a", "a/./b", "/abs", "a//b", "a/", "a\\b", "a\0b",
            "%2e%2e", "a%2Fb", "a b", "a\nb", ".hidden", "é", &long,
        ] {
            let err = StateKey::new(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidInput { .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn error_messages_say_what_is_wrong() {
        let msg = StateKey::new("a/../b").unwrap_err().to_string();
        assert!(msg.contains("'..'"), "{msg}");
        let msg = StateKey::new("/x").unwrap_err().to_string();
        assert!(msg.contains("absolute"), "{msg}");
        let msg = TenantId::new("default").unwrap_err().to_string();
        assert!(msg.contains("reserved"), "{msg}");
    }

    #[test]
    fn lock_keys() {
        assert_eq!(
            LockKey::stack_env("web", "prod").unwrap().as_str(),
            "stack:web:env:prod"
        );
        for bad in ["", "a::b", ":a", "a:", "a/b", "a b", &"x".repeat(600)] {
            assert!(LockKey::new(bad).is_err(), "{bad:?}");
        }
        assert!(LockKey::stack_env("a:b", "prod").is_err());
        let k = LockKey::new("stack:web").unwrap();
        let p = k.prefixed("tenant:acme").unwrap();
        assert_eq!(p.as_str(), "tenant:acme:stack:web");
        assert_eq!(p.strip_prefix("tenant:acme"), Some(k));
        assert_eq!(p.strip_prefix("tenant:ac"), None);
    }

    #[test]
    fn strip_and_under() {
        let p = StateKey::new("tenants/acme/v1").unwrap();
        let k = StateKey::new("tenants/acme/v1/stacks/x").unwrap();
        assert!(k.is_under(&p));
        assert_eq!(k.strip_prefix(&p).unwrap().as_str(), "stacks/x");
        let sibling = StateKey::new("tenants/acme/v10/x").unwrap();
        assert!(!sibling.is_under(&p));
        assert!(!p.is_under(&p));
    }

    fn segment() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_:=@-][A-Za-z0-9._:=@-]{0,20}"
    }

    proptest! {
        #[test]
        fn valid_keys_round_trip(segs in proptest::collection::vec(segment(), 1..6)) {
            let s = segs.join("/");
            let k = StateKey::new(s.clone()).unwrap();
            prop_assert_eq!(k.as_str(), s.as_str());
            let back: StateKey = serde_json::from_str(&serde_json::to_string(&k).unwrap()).unwrap();
            prop_assert_eq!(back, k);
        }

        #[test]
        fn joined_keys_never_escape(prefix in proptest::collection::vec(segment(), 1..4), raw in "\\PC{0,40}") {
            let p = StateKey::new(prefix.join("/")).unwrap();
            if let Ok(k) = StateKey::new(raw) {
                let joined = p.join(&k).unwrap();
                prop_assert!(joined.is_under(&p));
                prop_assert_eq!(joined.strip_prefix(&p).unwrap(), k);
                prop_assert!(!joined.segments().any(|s| s == ".." || s == "." || s.is_empty()));
            }
        }

        #[test]
        fn arbitrary_strings_never_contain_traversal(raw in "[./a%2eEfF\\\\]{0,12}") {
            if let Ok(k) = StateKey::new(raw) {
                prop_assert!(!k.segments().any(|s| s.starts_with('.')));
                prop_assert!(!k.as_str().contains('%') && !k.as_str().contains('\\'));
            }
        }

        #[test]
        fn valid_tenant_ids_round_trip(id in "[a-z][a-z0-9-]{1,61}[a-z0-9]") {
            if !RESERVED_TENANT_IDS.contains(&id.as_str()) {
                let t = TenantId::new(id.clone()).unwrap();
                prop_assert_eq!(t.as_str(), id.as_str());
            }
        }
    }
}
