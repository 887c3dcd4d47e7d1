//! The `LockManager` conformance suite: one public function per check.
//!
//! The manager under test must read time from the [`ManualClock`] passed in
//! (and sleep through it in `acquire`), so expiry and waiting are tested by
//! moving the clock, never by sleeping. Every run uses fresh keys
//! (`tk-<uuid>:...`), so runs on a shared store never meet.

use std::time::Duration;

use super::Outcome;
use crate::clock::{chrono_duration, Clock, ManualClock};
use crate::error::Error;
use crate::keys::{LockKey, MAX_LOCK_KEY_LEN};
use crate::lock::{LockId, LockInfo, LockManager, LockRequest, MAX_LOCK_TEXT, MAX_LOCK_TTL};
use crate::TOOL_VERSION;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn req(key: &LockKey, ttl: u64) -> LockRequest {
    LockRequest::new(key.clone(), secs(ttl)).operation("conformance")
}

/// Fresh keys for one check: `tk-<uuid>:<name>`.
struct Keys(String);

impl Keys {
    fn new() -> Self {
        Keys(format!("tk-{}", uuid::Uuid::new_v4().simple()))
    }

    fn key(&self, name: &str) -> LockKey {
        LockKey::new(format!("{}:{name}", self.0)).expect("valid lock key")
    }
}

async fn current(locks: &dyn LockManager, key: &LockKey) -> Option<LockInfo> {
    locks.inspect(key).await.expect("inspect")
}

fn expect_held_by(result: crate::Result<LockInfo>, holder: &LockInfo, what: &str) {
    match result {
        Err(Error::LockHeld { holder: h }) => {
            assert_eq!(
                h.lock_id, holder.lock_id,
                "{what}: LockHeld names the holder"
            );
            assert_eq!(h.who, holder.who, "{what}: LockHeld carries who");
            assert_eq!(
                h.operation, holder.operation,
                "{what}: LockHeld carries the operation"
            );
            assert_eq!(h.key, holder.key, "{what}: LockHeld carries the key");
            assert_eq!(
                h.fencing_token, holder.fencing_token,
                "{what}: LockHeld carries the token"
            );
        }
        other => panic!(
            "{what}: expected LockHeld by {}, got {other:?}",
            holder.lock_id
        ),
    }
}

fn expect_refused(result: crate::Result<impl std::fmt::Debug>, what: &str) -> Error {
    match result {
        Err(e @ (Error::Precondition { .. } | Error::NotFound { .. })) => e,
        other => panic!("{what}: expected Precondition or NotFound, got {other:?}"),
    }
}

fn expect_invalid(result: crate::Result<impl std::fmt::Debug>, what: &str) {
    match result {
        Err(Error::InvalidInput { message }) => {
            assert!(!message.is_empty(), "{what}: the error says what is wrong")
        }
        other => panic!("{what}: expected InvalidInput, got {other:?}"),
    }
}

/// The checks of this suite, in the order [`lock_suite!`](crate::lock_suite) lists them.
pub const CHECKS: [&str; 12] = [
    "try_acquire_and_held",
    "acquire_waits",
    "renew",
    "release",
    "inspect",
    "list_prefix",
    "force_unlock",
    "expiry_takeover",
    "fencing_tokens_increase",
    "bad_input",
    "control_characters_in_who_or_operation_are_refused",
    "requested_lock_id_is_the_leases",
];

/// A free key is taken; a held one is `LockHeld` naming the holder.
pub async fn try_acquire_and_held(locks: &dyn LockManager, clock: &ManualClock) -> Outcome {
    let keys = Keys::new();
    let key = keys.key("stack:web:env:prod");
    let request = req(&key, 30).who("alice@laptop").info("{\"pr\": 42}");
    let now = clock.now();
    let lease = locks
        .try_acquire(&request)
        .await
        .expect("acquire a free lock");
    assert_eq!(lease.key, key, "the lease names the key");
    assert_eq!(lease.who, "alice@laptop");
    assert_eq!(lease.operation, "conformance");
    assert_eq!(lease.info, "{\"pr\": 42}");
    assert_eq!(
        lease.version, TOOL_VERSION,
        "the lease records the tool version"
    );
    assert_eq!(
        lease.lock_id.0.get_version_num(),
        4,
        "lock ids are random UUIDs"
    );
    assert_eq!(lease.created, now, "created is the manager's clock");
    assert_eq!(lease.last_heartbeat, now);
    assert_eq!(lease.expires, now + chrono_duration(secs(30)));
    assert!(lease.fencing_token > 0, "fencing tokens start above 0");
    assert!(!lease.is_expired(clock.now()));

    expect_held_by(
        locks.try_acquire(&req(&key, 30).who("bob@ci")).await,
        &lease,
        "second try_acquire",
    );
    let default_who = LockRequest::new(key.clone(), secs(5));
    assert!(
        default_who.who.contains('@'),
        "who defaults to user@host: {}",
        default_who.who
    );
    expect_held_by(
        locks.try_acquire(&default_who).await,
        &lease,
        "try_acquire with default who",
    );
    assert_eq!(
        current(locks, &key).await.as_ref(),
        Some(&lease),
        "a refused acquire changes nothing"
    );

    // Another key is independent.
    let other = locks
        .try_acquire(&req(&keys.key("stack:web:env:dev"), 30))
        .await
        .expect("another key is free");
    assert_ne!(other.lock_id, lease.lock_id, "each lease has its own id");
    locks
        .release(&other.key, other.lock_id)
        .await
        .expect("release");
    locks.release(&key, lease.lock_id).await.expect("release");
    Outcome::Passed
}

/// A request that names its lock id (`LockRequest::lock_id`) gets a
/// lease with exactly that id, which renews and releases it; a refused
/// request with another id changes nothing.
pub async fn requested_lock_id_is_the_leases(
    locks: &dyn LockManager,
    clock: &ManualClock,
) -> Outcome {
    let keys = Keys::new();
    let key = keys.key("named");
    let id = LockId::new_random();
    let lease = locks
        .try_acquire(&req(&key, 30).lock_id(id))
        .await
        .expect("acquire with a named lock id");
    assert_eq!(lease.lock_id, id, "the lease has the requested id");
    let other = LockId::new_random();
    expect_held_by(
        locks.try_acquire(&req(&key, 30).lock_id(other)).await,
        &lease,
        "another named id on a held key",
    );
    let renewed = locks.renew(&key, id, secs(60)).await.expect("renew");
    assert_eq!(renewed.lock_id, id);
    assert_eq!(renewed.expires, clock.now() + chrono_duration(secs(60)));
    locks
        .release(&key, id)
        .await
        .expect("release by the named id");
    assert!(current(locks, &key).await.is_none(), "released");
    Outcome::Passed
}

/// `acquire(wait)` waits for a release or expiry, and gives up after `wait`.
pub async fn acquire_waits(locks: &dyn LockManager, clock: &ManualClock) -> Outcome {
    let keys = Keys::new();
    let key = keys.key("wait");

    let t0 = clock.now();
    let free = locks
        .acquire(&req(&key, 30), secs(60))
        .await
        .expect("acquire a free lock with a wait");
    assert_eq!(clock.now(), t0, "a free lock is taken without waiting");

    let t1 = clock.now();
    expect_held_by(
        locks.acquire(&req(&key, 30), secs(5)).await,
        &free,
        "acquire with a wait shorter than the lease",
    );
    let waited = clock.now() - t1;
    assert!(
        waited >= chrono_duration(secs(5)),
        "acquire retried for the whole wait (waited {waited})"
    );
    assert!(
        waited < chrono_duration(secs(30)),
        "acquire gave up after its wait (waited {waited})"
    );
    assert_eq!(current(locks, &key).await.as_ref(), Some(&free));

    let taken = locks
        .acquire(&req(&key, 30), secs(120))
        .await
        .expect("acquire waits until the lease runs out");
    assert!(
        clock.now() >= free.expires,
        "the lock was taken only after the holder's lease ran out"
    );
    assert_ne!(taken.lock_id, free.lock_id);
    assert!(taken.fencing_token > free.fencing_token);
    locks.release(&key, taken.lock_id).await.expect("release");
    Outcome::Passed
}

/// Renew extends one's own lease; a foreign, stale or expired lease is refused.
pub async fn renew(locks: &dyn LockManager, clock: &ManualClock) -> Outcome {
    let keys = Keys::new();
    let key = keys.key("renew");
    let lease = locks.try_acquire(&req(&key, 30)).await.expect("acquire");

    clock.advance(secs(20));
    let now = clock.now();
    let renewed = locks
        .renew(&key, lease.lock_id, secs(60))
        .await
        .expect("the holder renews");
    assert_eq!(renewed.lock_id, lease.lock_id, "renew keeps the lock id");
    assert_eq!(
        renewed.fencing_token, lease.fencing_token,
        "renew keeps the fencing token"
    );
    assert_eq!(renewed.created, lease.created, "renew keeps created");
    assert_eq!(renewed.last_heartbeat, now, "renew records the heartbeat");
    assert_eq!(
        renewed.expires,
        now + chrono_duration(secs(60)),
        "renew extends the lease by ttl from now"
    );
    assert_eq!(current(locks, &key).await.as_ref(), Some(&renewed));

    // Past the first expiry, the renewed lease still holds.
    clock.advance(secs(50));
    expect_held_by(
        locks.try_acquire(&req(&key, 30)).await,
        &renewed,
        "acquire after the original expiry of a renewed lease",
    );

    // A foreign lock id cannot renew; nothing changes.
    let before = current(locks, &key).await;
    expect_refused(
        locks.renew(&key, LockId::new_random(), secs(60)).await,
        "renew by a foreign lock id",
    );
    assert!(
        matches!(
            locks.renew(&key, LockId::new_random(), secs(60)).await,
            Err(Error::Precondition { .. })
        ),
        "renew by a foreign id of a held lock is a Precondition"
    );
    assert_eq!(
        current(locks, &key).await,
        before,
        "a refused renew changes nothing"
    );

    // Bad TTLs are refused, nothing changes.
    expect_invalid(
        locks.renew(&key, lease.lock_id, Duration::ZERO).await,
        "renew with a zero ttl",
    );
    expect_invalid(
        locks
            .renew(&key, lease.lock_id, MAX_LOCK_TTL + secs(1))
            .await,
        "renew with a huge ttl",
    );
    assert_eq!(current(locks, &key).await, before);

    // A renew after the lease ran out is refused: the lease is lost.
    clock.advance(secs(61));
    expect_refused(
        locks.renew(&key, lease.lock_id, secs(60)).await,
        "renew of an expired lease",
    );
    assert!(
        current(locks, &key).await.is_none(),
        "the lease stays expired"
    );

    // A renew of a key nobody holds is NotFound.
    let free = keys.key("never");
    assert!(
        matches!(
            locks.renew(&free, LockId::new_random(), secs(30)).await,
            Err(Error::NotFound { .. })
        ),
        "renew of a free key is NotFound"
    );
    Outcome::Passed
}

/// Release frees one's own lease only.
pub async fn release(locks: &dyn LockManager, _clock: &ManualClock) -> Outcome {
    let keys = Keys::new();
    let key = keys.key("release");
    let lease = locks.try_acquire(&req(&key, 30)).await.expect("acquire");

    expect_refused(
        locks.release(&key, LockId::new_random()).await,
        "release by a foreign lock id",
    );
    assert_eq!(
        current(locks, &key).await.as_ref(),
        Some(&lease),
        "a refused release changes nothing"
    );

    locks
        .release(&key, lease.lock_id)
        .await
        .expect("the holder releases");
    assert!(
        current(locks, &key).await.is_none(),
        "a released lock is free"
    );
    assert!(
        matches!(
            locks.release(&key, lease.lock_id).await,
            Err(Error::NotFound { .. })
        ),
        "releasing twice is NotFound"
    );
    assert!(
        matches!(
            locks.release(&keys.key("never"), lease.lock_id).await,
            Err(Error::NotFound { .. })
        ),
        "releasing a never-taken key is NotFound"
    );
    let again = locks.try_acquire(&req(&key, 30)).await.expect("re-acquire");
    assert!(again.fencing_token > lease.fencing_token);
    locks.release(&key, again.lock_id).await.expect("release");
    Outcome::Passed
}

/// Inspect shows the holder and nothing for a free or expired key.
pub async fn inspect(locks: &dyn LockManager, clock: &ManualClock) -> Outcome {
    let keys = Keys::new();
    let key = keys.key("inspect");
    assert!(
        current(locks, &key).await.is_none(),
        "a never-taken key is free"
    );
    let lease = locks.try_acquire(&req(&key, 10)).await.expect("acquire");
    assert_eq!(current(locks, &key).await.as_ref(), Some(&lease));
    clock.advance(secs(9));
    assert_eq!(current(locks, &key).await.as_ref(), Some(&lease));
    clock.advance(secs(1));
    assert!(
        current(locks, &key).await.is_none(),
        "an expired lock inspects as free"
    );
    Outcome::Passed
}

/// List returns exactly the held locks below a prefix.
pub async fn list_prefix(locks: &dyn LockManager, clock: &ManualClock) -> Outcome {
    let keys = Keys::new();
    let a1 = keys.key("a:1");
    let a2 = keys.key("a:2");
    let b1 = keys.key("b:1");
    let short = keys.key("a:3");
    let mut held = Vec::new();
    for k in [&a1, &a2, &b1] {
        held.push(locks.try_acquire(&req(k, 60)).await.expect("acquire"));
    }
    let gone = locks.try_acquire(&req(&short, 5)).await.expect("acquire");
    let released = locks
        .try_acquire(&req(&keys.key("a:4"), 60))
        .await
        .expect("acquire");
    locks
        .release(&released.key, released.lock_id)
        .await
        .expect("release");
    clock.advance(secs(6));
    assert!(gone.is_expired(clock.now()), "the short lease has run out");

    let names = |v: Vec<LockInfo>| -> Vec<String> {
        let mut n: Vec<String> = v.into_iter().map(|i| i.key.to_string()).collect();
        n.sort();
        n
    };
    let under_a = locks.list(&format!("{}:a:", keys.0)).await.expect("list a");
    assert_eq!(
        names(under_a),
        vec![a1.to_string(), a2.to_string()],
        "list shows held, unexpired locks under the prefix only"
    );
    let all_mine = locks.list(&format!("{}:", keys.0)).await.expect("list");
    assert_eq!(all_mine.len(), 3);
    for info in &all_mine {
        let h = held
            .iter()
            .find(|h| h.key == info.key)
            .expect("listed lock was taken");
        assert_eq!(info.lock_id, h.lock_id, "list carries the lease");
    }
    let everything = locks.list("").await.expect("list all");
    assert!(
        held.iter()
            .all(|h| everything.iter().any(|i| i.lock_id == h.lock_id)),
        "list(\"\") includes every held lock"
    );
    assert!(
        !everything
            .iter()
            .any(|i| i.lock_id == gone.lock_id || i.lock_id == released.lock_id),
        "list(\"\") leaves out expired and released locks"
    );
    assert!(
        locks
            .list(&format!("{}:c", keys.0))
            .await
            .expect("list")
            .is_empty(),
        "a prefix nothing matches lists nothing"
    );
    for h in held {
        locks.release(&h.key, h.lock_id).await.expect("release");
    }
    assert!(locks
        .list(&format!("{}:", keys.0))
        .await
        .expect("list")
        .is_empty());
    Outcome::Passed
}

/// Force-unlock frees any lease and the key can be taken again.
pub async fn force_unlock(locks: &dyn LockManager, _clock: &ManualClock) -> Outcome {
    let keys = Keys::new();
    let key = keys.key("force");
    let lease = locks.try_acquire(&req(&key, 600)).await.expect("acquire");

    expect_refused(
        locks.force_unlock(&key, LockId::new_random()).await,
        "force-unlock with a lock id that does not hold the lock",
    );
    assert_eq!(current(locks, &key).await.as_ref(), Some(&lease));

    // The admin reads the holder's id and frees the lock.
    let seen = current(locks, &key).await.expect("held");
    locks
        .force_unlock(&key, seen.lock_id)
        .await
        .expect("force-unlock with the holder's id");
    assert!(
        current(locks, &key).await.is_none(),
        "force-unlocked lock is free"
    );

    // The old holder's lease is gone.
    expect_refused(
        locks.renew(&key, lease.lock_id, secs(60)).await,
        "renew after force-unlock",
    );
    let next = locks.try_acquire(&req(&key, 60)).await.expect("acquire");
    assert!(next.fencing_token > lease.fencing_token);
    expect_refused(
        locks.release(&key, lease.lock_id).await,
        "release by the force-unlocked lease",
    );
    expect_refused(
        locks.force_unlock(&key, lease.lock_id).await,
        "force-unlock with the old holder's id",
    );
    assert_eq!(current(locks, &key).await.as_ref(), Some(&next));
    locks.release(&key, next.lock_id).await.expect("release");
    assert!(
        matches!(
            locks.force_unlock(&key, next.lock_id).await,
            Err(Error::NotFound { .. })
        ),
        "force-unlock of a free key is NotFound"
    );
    Outcome::Passed
}

/// An expired lease can be taken over and the old holder can no longer renew.
pub async fn expiry_takeover(locks: &dyn LockManager, clock: &ManualClock) -> Outcome {
    let keys = Keys::new();
    let key = keys.key("takeover");
    let old = locks.try_acquire(&req(&key, 30)).await.expect("acquire");

    clock.advance(secs(29));
    expect_held_by(
        locks.try_acquire(&req(&key, 30)).await,
        &old,
        "acquire just before expiry",
    );
    clock.advance(secs(1));
    let new = locks
        .try_acquire(&req(&key, 30))
        .await
        .expect("take over an expired lock");
    assert_ne!(new.lock_id, old.lock_id);
    assert!(
        new.fencing_token > old.fencing_token,
        "fencing token grows on takeover"
    );

    // The old lease can no longer renew, release or force-unlock.
    let e = expect_refused(
        locks.renew(&key, old.lock_id, secs(30)).await,
        "renew by a lease from before the takeover",
    );
    assert!(
        matches!(e, Error::Precondition { .. }),
        "a stale renew of a held lock is a Precondition: {e}"
    );
    expect_refused(
        locks.release(&key, old.lock_id).await,
        "release by a lease from before the takeover",
    );
    expect_refused(
        locks.force_unlock(&key, old.lock_id).await,
        "force-unlock with the id of a lease from before the takeover",
    );
    assert_eq!(
        current(locks, &key).await.as_ref(),
        Some(&new),
        "refused stale calls change nothing"
    );
    expect_held_by(
        locks.try_acquire(&req(&key, 30)).await,
        &new,
        "acquire after a takeover",
    );
    locks.release(&key, new.lock_id).await.expect("release");
    Outcome::Passed
}

/// Fencing tokens strictly increase per key across every acquire and takeover.
pub async fn fencing_tokens_increase(locks: &dyn LockManager, clock: &ManualClock) -> Outcome {
    let keys = Keys::new();
    let key = keys.key("tokens");
    let mut tokens = Vec::new();
    for round in 0..4 {
        let lease = locks.try_acquire(&req(&key, 30)).await.expect("acquire");
        tokens.push(lease.fencing_token);
        match round {
            0 => locks.release(&key, lease.lock_id).await.expect("release"),
            1 => clock.advance(secs(31)),
            2 => locks
                .force_unlock(&key, lease.lock_id)
                .await
                .expect("force-unlock"),
            _ => {
                clock.advance(secs(31));
                let taker = locks.try_acquire(&req(&key, 30)).await.expect("takeover");
                tokens.push(taker.fencing_token);
                locks.release(&key, taker.lock_id).await.expect("release");
            }
        }
    }
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "fencing tokens strictly increase across release, expiry, force-unlock and takeover: {tokens:?}"
    );
    // Another key has its own sequence; it never affects this one.
    let other = locks
        .try_acquire(&req(&keys.key("other"), 30))
        .await
        .expect("acquire");
    locks
        .release(&other.key, other.lock_id)
        .await
        .expect("release");
    let last = locks.try_acquire(&req(&key, 30)).await.expect("acquire");
    assert!(last.fencing_token > tokens[tokens.len() - 1]);
    locks.release(&key, last.lock_id).await.expect("release");
    Outcome::Passed
}

/// Bad keys, TTLs and texts are `InvalidInput`.
pub async fn bad_input(locks: &dyn LockManager, _clock: &ManualClock) -> Outcome {
    let keys = Keys::new();
    let key = keys.key("bad");

    // Keys are refused at the type level: no manager ever sees them.
    assert!(matches!(LockKey::new(""), Err(Error::InvalidInput { .. })));
    let long = "k".repeat(MAX_LOCK_KEY_LEN + 1);
    assert!(matches!(
        LockKey::new(long),
        Err(Error::InvalidInput { .. })
    ));
    for bad in ["a::b", ":a", "a/b", "a b", "../x", "a:.hidden"] {
        assert!(LockKey::new(bad).is_err(), "lock key {bad:?} is refused");
    }
    // A long key (past one 255-byte path segment, with room for a tenant
    // prefix) works end to end.
    let long_key = LockKey::new(format!("{}:{}", keys.0, "k".repeat(400 - keys.0.len() - 1)))
        .expect("a 400-byte key is valid");
    let l = locks
        .try_acquire(&req(&long_key, 30))
        .await
        .expect("acquire a long key");
    assert_eq!(current(locks, &long_key).await.as_ref(), Some(&l));
    assert!(
        locks
            .list(&keys.0)
            .await
            .expect("list")
            .iter()
            .any(|i| i.lock_id == l.lock_id),
        "list finds a long key"
    );
    locks.release(&long_key, l.lock_id).await.expect("release");

    // Malformed lock ids never parse.
    for bad in [
        "",
        "not-a-uuid",
        "1234",
        "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
    ] {
        assert!(
            matches!(LockId::parse(bad), Err(Error::InvalidInput { .. })),
            "lock id {bad:?} is refused"
        );
    }

    // TTLs and texts on a free key: refused, the key stays free.
    expect_invalid(
        locks.try_acquire(&req(&key, 0)).await,
        "acquire with a zero ttl",
    );
    expect_invalid(
        locks
            .try_acquire(&LockRequest::new(key.clone(), MAX_LOCK_TTL + secs(1)))
            .await,
        "acquire with a huge ttl",
    );
    expect_invalid(
        locks
            .acquire(&LockRequest::new(key.clone(), Duration::ZERO), secs(5))
            .await,
        "acquire(wait) with a zero ttl",
    );
    expect_invalid(
        locks
            .try_acquire(&req(&key, 30).info("x".repeat(MAX_LOCK_TEXT + 1)))
            .await,
        "acquire with over-long info",
    );
    assert!(
        current(locks, &key).await.is_none(),
        "refused acquires take nothing"
    );

    // The same on a held key: the holder is unchanged.
    let lease = locks.try_acquire(&req(&key, 30)).await.expect("acquire");
    expect_invalid(
        locks.try_acquire(&req(&key, 0)).await,
        "acquire of a held key with a zero ttl",
    );
    expect_invalid(
        locks
            .renew(&key, lease.lock_id, Duration::from_millis(1))
            .await,
        "renew with a tiny ttl",
    );
    assert_eq!(current(locks, &key).await.as_ref(), Some(&lease));
    // A lock id that parsed but is not the holder's (e.g. a typo).
    let typo = LockId::parse(&uuid::Uuid::new_v4().to_string()).expect("valid id");
    expect_refused(locks.release(&key, typo).await, "release with a wrong id");
    assert_eq!(current(locks, &key).await.as_ref(), Some(&lease));
    locks.release(&key, lease.lock_id).await.expect("release");
    Outcome::Passed
}

/// `who` and `operation` with a control character (a newline that would
/// forge a log line, an escape, a NUL) are refused, on a free key and on a
/// held one, and change nothing; `info` stays free-form.
pub async fn control_characters_in_who_or_operation_are_refused(
    locks: &dyn LockManager,
    _clock: &ManualClock,
) -> Outcome {
    let keys = Keys::new();
    let key = keys.key("ctl");
    let bad = [
        "deploy\nINFO forged line",
        "a\rb",
        "\u{1b}[31mred",
        "nul\0",
        "tab\t",
        "del\u{7f}",
        "c1\u{85}",
    ];
    for text in bad {
        expect_invalid(
            locks.try_acquire(&req(&key, 30).operation(text)).await,
            &format!("acquire with operation {text:?}"),
        );
        expect_invalid(
            locks.try_acquire(&req(&key, 30).who(text)).await,
            &format!("acquire with who {text:?}"),
        );
        expect_invalid(
            locks.acquire(&req(&key, 30).operation(text), secs(5)).await,
            &format!("acquire(wait) with operation {text:?}"),
        );
    }
    assert!(
        current(locks, &key).await.is_none(),
        "refused acquires take nothing"
    );
    let lease = locks
        .try_acquire(&req(&key, 30).who("ci@runner-1").info("{\n  \"pr\": 42\n}"))
        .await
        .expect("printable who and operation, multi-line info");
    for text in bad {
        expect_invalid(
            locks.try_acquire(&req(&key, 30).operation(text)).await,
            &format!("acquire of a held key with operation {text:?}"),
        );
    }
    assert_eq!(
        current(locks, &key).await.as_ref(),
        Some(&lease),
        "the holder is unchanged"
    );
    locks.release(&key, lease.lock_id).await.expect("release");
    Outcome::Passed
}

/// A lock manager under test and the [`ManualClock`] it reads time from.
#[allow(missing_debug_implementations)]
pub struct LockFixture<L> {
    /// The manager.
    pub locks: L,
    /// The clock the manager reads and sleeps through.
    pub clock: ManualClock,
    /// Whatever must outlive the checks (a temporary directory, a server).
    pub guard: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl<L> LockFixture<L> {
    /// A manager and its clock.
    pub fn new(locks: L, clock: ManualClock) -> Self {
        LockFixture {
            locks,
            clock,
            guard: None,
        }
    }

    /// Keeps `guard` alive as long as the fixture.
    pub fn guarded(mut self, guard: impl std::any::Any + Send + Sync) -> Self {
        self.guard = Some(Box::new(guard));
        self
    }
}

/// One `#[tokio::test]` per check of the lock suite, on a fresh manager
/// from `$make` (a future of `Option<LockFixture<L>>`; `None` skips).
///
/// ```text
/// tenancy_core::lock_suite!(async {
///     let clock = tenancy_core::ManualClock::starting_now();
///     let locks = MyLocks::new().with_clock(std::sync::Arc::new(clock.clone()));
///     Some(tenancy_core::testkit::lock::LockFixture::new(locks, clock))
/// });
/// ```
///
/// (`tenancy-lock/tests/conformance.rs` runs it on every manager of that crate.)
#[macro_export]
macro_rules! lock_suite {
    ($make:expr) => {
        $crate::__testkit_tests!(lock, true, f => (&f.locks, &f.clock), $make, [
            try_acquire_and_held, acquire_waits, renew, release, inspect, list_prefix,
            force_unlock, expiry_takeover, fencing_tokens_increase, bad_input,
            control_characters_in_who_or_operation_are_refused,
            requested_lock_id_is_the_leases,
        ]);
    };
}
