//! PostgreSQL-specific behaviour beyond the conformance suites (which run
//! on PostgreSQL in `conformance.rs`, `registry_backends.rs` and
//! tenancy-lock's tests): keys with SQL pattern characters, big objects,
//! paging, the pool's bound, unreachable servers, passwords in URLs, the
//! schema version and the server's own error messages. Each test works in a fresh schema of the test server
//! (`scripts/postgres-server.sh`), or is skipped loudly (a failure in CI).
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::TryStreamExt;
use tenancy_core::{Error, PutMode, StateBackend, StateKey};
use tenancy_state::postgres::PostgresBackend;
use tenancy_state::testing;

fn key(s: &str) -> StateKey {
    StateKey::new(s).unwrap()
}

async fn listed(b: &PostgresBackend, prefix: Option<&str>) -> Vec<String> {
    let p = prefix.map(key);
    let mut keys: Vec<String> = b
        .list(p.as_ref())
        .map_ok(|e| e.key.as_str().to_string())
        .try_collect()
        .await
        .unwrap();
    keys.sort();
    keys
}

#[tokio::test]
async fn keys_with_pattern_characters_are_only_characters() {
    let Some(b) = testing::postgres_or_skip("postgres::pattern_keys").await else {
        return;
    };
    for k in ["a_b/x", "aXb/x", "a_b/y", "a_bc/z", "a=b@c:d/x", "a_b"] {
        b.put(&key(k), Bytes::from_static(b"{}"), PutMode::Create)
            .await
            .unwrap();
    }
    // `_` would match any character in a LIKE pattern; here it is just `_`.
    assert_eq!(listed(&b, Some("a_b")).await, ["a_b/x", "a_b/y"]);
    assert_eq!(listed(&b, Some("a=b@c:d")).await, ["a=b@c:d/x"]);
    assert_eq!(listed(&b, Some("aXb")).await, ["aXb/x"]);
    assert_eq!(listed(&b, None).await.len(), 6);
}

#[tokio::test]
async fn sql_metacharacters_are_refused_in_keys_and_kept_as_bytes_in_values() {
    let Some(b) = testing::postgres_or_skip("postgres::sql_metacharacters").await else {
        return;
    };
    // Quotes, backslashes, `%`, `;` and comments never reach a statement:
    // the key type refuses them, naming the character.
    for bad in ["a'b", "a\"b", "a\\b", "a%b", "a;b", "a--b/x y", "a\u{0}b"] {
        let e = StateKey::new(bad).expect_err(bad);
        assert!(e.to_string().contains("allowed are"), "{bad}: {e}");
    }
    // In values they are just bytes (statements take them as parameters).
    let k = key("meta/x");
    let value = Bytes::from_static(b"'; DROP TABLE objects; --\\ \"%_\0\xff");
    b.put(&k, value.clone(), PutMode::Create).await.unwrap();
    assert_eq!(b.get(&k).await.unwrap().unwrap().bytes, value);
    let again = b.get_many(&[k.clone(), key("meta/none")]).await.unwrap();
    assert_eq!(again[0].as_ref().map(|o| o.bytes.clone()), Some(value));
    assert!(again[1].is_none());
    assert_eq!(listed(&b, Some("meta")).await, ["meta/x"]);
}

#[tokio::test]
async fn a_one_mebibyte_object_round_trips_byte_for_byte() {
    let Some(b) = testing::postgres_or_skip("postgres::big_object").await else {
        return;
    };
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i * 31 % 251) as u8).collect();
    let k = key("big/object");
    let v = b
        .put(&k, Bytes::from(big.clone()), PutMode::Create)
        .await
        .unwrap();
    let got = b.get(&k).await.unwrap().unwrap();
    assert_eq!(got.version, v);
    assert_eq!(got.bytes.as_ref(), big.as_slice());
    let listed: Vec<_> = b.list(None).try_collect().await.unwrap();
    assert_eq!(listed[0].size, 1024 * 1024);
}

#[tokio::test]
async fn a_listing_pages_through_every_key_in_order() {
    let Some(b) = testing::postgres_or_skip("postgres::paging").await else {
        return;
    };
    // More than two pages of 500, plus keys on both sides of the prefix.
    for i in 0..1100 {
        b.put(
            &key(&format!("p/{i:05}")),
            Bytes::from_static(b"x"),
            PutMode::Create,
        )
        .await
        .unwrap();
    }
    b.put(&key("o/1"), Bytes::from_static(b"x"), PutMode::Create)
        .await
        .unwrap();
    b.put(&key("p0"), Bytes::from_static(b"x"), PutMode::Create)
        .await
        .unwrap();
    let got: Vec<String> = b
        .list(Some(&key("p")))
        .map_ok(|e| e.key.as_str().to_string())
        .try_collect()
        .await
        .unwrap();
    let want: Vec<String> = (0..1100).map(|i| format!("p/{i:05}")).collect();
    assert_eq!(
        got, want,
        "every key once, in key order, nothing outside the prefix"
    );
}

#[tokio::test]
async fn a_full_pool_makes_requests_wait_then_fail_clearly() {
    let Some(url) = testing::postgres_url_or_skip("postgres::full_pool") else {
        return;
    };
    let b = PostgresBackend::open(&format!("{url}&pool_size=1&pool_timeout=1"))
        .await
        .unwrap();
    let held = b.pool().get().await.unwrap();
    let started = Instant::now();
    let e = b.get(&key("x")).await.unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(e, Error::Backend { .. }), "{e:?}");
    assert!(e.is_temporary(), "a full pool is worth a retry: {e}");
    assert!(e.to_string().contains("pool"), "{e}");
    assert!(
        waited >= Duration::from_millis(900),
        "did not wait: {waited:?}"
    );
    drop(held);
    // Once a connection is free again, requests go through.
    assert!(b.get(&key("x")).await.unwrap().is_none());
}

#[tokio::test]
async fn an_unreachable_server_fails_fast_naming_the_url() {
    let started = Instant::now();
    let e = PostgresBackend::open("postgres://tenancy@127.0.0.1:1/nowhere?connect_timeout=2")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Backend { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("postgres://tenancy@127.0.0.1:1/nowhere"),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_password_in_the_url_is_refused_and_never_echoed() {
    for url in [
        "postgres://tenancy:hunter2@127.0.0.1/db",
        "postgresql://tenancy:hunter2@127.0.0.1:5432/db?schema=x",
    ] {
        let e = tenancy_state::open(url).await.unwrap_err();
        assert!(matches!(e, Error::InvalidInput { .. }), "{e:?}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(e.to_string().contains("PGPASSWORD"), "{e}");
    }
    for (url, what) in [
        ("postgres://tenancy@127.0.0.1/db?schema=Bad-Name", "schema"),
        ("postgres://tenancy@127.0.0.1/db?pool_size=0", "pool_size"),
        (
            "postgres://tenancy@127.0.0.1/db?nonsense=1",
            "unknown parameter",
        ),
        ("postgres:///db", "host"),
    ] {
        let e = tenancy_state::open(url).await.unwrap_err();
        assert!(matches!(e, Error::InvalidInput { .. }), "{url}: {e:?}");
        assert!(e.to_string().contains(what), "{url}: {e}");
    }
}

#[tokio::test]
async fn a_schema_newer_than_this_build_is_refused() {
    let Some(url) = testing::postgres_url_or_skip("postgres::newer_schema") else {
        return;
    };
    let b = PostgresBackend::open(&url).await.unwrap();
    let client = b.pool().get().await.unwrap();
    client
        .execute(
            &format!(
                "UPDATE \"{}\".meta SET value = '99' WHERE name = 'schema_version'",
                b.schema()
            ),
            &[],
        )
        .await
        .unwrap();
    drop(client);
    let e = PostgresBackend::open(&url).await.unwrap_err();
    assert!(matches!(e, Error::NotImplemented { .. }), "{e:?}");
    assert!(e.to_string().contains("newer"), "{e}");
}

#[tokio::test]
async fn two_processes_opening_one_new_schema_at_once_both_succeed() {
    let Some(url) = testing::postgres_url_or_skip("postgres::concurrent_open") else {
        return;
    };
    let opens = futures::future::join_all((0..8).map(|_| PostgresBackend::open(&url))).await;
    for o in opens {
        o.unwrap();
    }
}

/// A store in a fresh schema holding `apps/a` = "1", with `sql` (where
/// `{objects}` names its table) then run on it as someone else would.
async fn one_object_then(test: &str, sql: &str) -> Option<(String, PostgresBackend)> {
    let url = testing::postgres_url_or_skip(test)?;
    let b = PostgresBackend::open(&url).await.unwrap();
    b.put(&key("apps/a"), Bytes::from_static(b"1"), PutMode::Create)
        .await
        .unwrap();
    let objects = format!("\"{}\".objects", b.schema());
    let client = b.pool().get().await.unwrap();
    client
        .batch_execute(&sql.replace("{objects}", &objects))
        .await
        .unwrap();
    drop(client);
    Some((url, b))
}

#[tokio::test]
async fn an_error_the_database_reports_carries_its_message_and_sqlstate() {
    // Someone drops the table under a running store: the error must say
    // what the server said, not only the driver's "db error".
    let Some((_, b)) = one_object_then("postgres::database_error", "DROP TABLE {objects}").await
    else {
        return;
    };
    let e = b.get(&key("apps/a")).await.unwrap_err();
    assert!(matches!(e, Error::Backend { .. }), "{e:?}");
    let shown = e.to_string();
    assert!(shown.contains("42P01"), "{shown}");
    assert!(shown.contains("does not exist"), "{shown}");
}

#[tokio::test]
async fn records_of_a_few_kilobytes_are_stored_inline_uncompressed() {
    let Some(url) = testing::postgres_url_or_skip("postgres::inline_rows") else {
        return;
    };
    let b = PostgresBackend::open(&url).await.unwrap();
    // A usage record of a busy tenant: a few KB of JSON, rewritten on
    // every reservation. Compressing it on each write cost a quarter of the
    // database's CPU with 64 tenants at once.
    let record: String = (0..40)
        .map(|i| format!("{{\"id\":\"{i:08}-0000-4000-8000-000000000000\",\"how\":\"released\"}},"))
        .collect();
    assert!(
        record.len() > 2500 && record.len() < 7000,
        "{}",
        record.len()
    );
    b.put(
        &key("registry-usage/busy.yaml"),
        Bytes::from(record.clone()),
        PutMode::Create,
    )
    .await
    .unwrap();
    let client = b.pool().get().await.unwrap();
    let row = client
        .query_one(
            &format!(
                "SELECT pg_column_size(bytes), octet_length(bytes) FROM \"{}\".objects WHERE key = $1",
                b.schema()
            ),
            &[&"registry-usage/busy.yaml"],
        )
        .await
        .unwrap();
    let (stored, len): (i32, i32) = (row.get(0), row.get(1));
    assert!(stored >= len, "compressed: {stored} bytes stored for {len}");
    assert_eq!(
        b.get(&key("registry-usage/busy.yaml"))
            .await
            .unwrap()
            .unwrap()
            .bytes,
        record
    );
}

/// The schema named in a test URL.
fn schema_of(url: &str) -> String {
    url.rsplit("schema=").next().unwrap().to_string()
}

#[tokio::test]
async fn a_schema_made_in_advance_by_the_dba_opens_without_create_on_the_database() {
    let Some(url) = testing::postgres_url_or_skip("postgres::premade_schema") else {
        return;
    };
    // Least privilege: the DBA makes the schema for an application role
    // that may not create schemas in the database (PostgreSQL's default for
    // a role that does not own it). The role logs in with the test
    // server's password, so the test needs no environment of its own.
    let schema = schema_of(&url);
    let role = format!("{schema}_app");
    let password = std::env::var("PGPASSWORD").unwrap();
    let admin = PostgresBackend::open(&url).await.unwrap();
    let client = admin.pool().get().await.unwrap();
    let premade = format!("{schema}_premade");
    client
        .batch_execute(&format!(
            "CREATE ROLE \"{role}\" LOGIN PASSWORD '{}'; \
             CREATE SCHEMA \"{premade}\" AUTHORIZATION \"{role}\";",
            password.replace('\'', "''")
        ))
        .await
        .unwrap();
    drop(client);
    let app_url = url
        .replacen("postgres://tenancy@", &format!("postgres://{role}@"), 1)
        .replace(&format!("schema={schema}"), &format!("schema={premade}"));
    let b = PostgresBackend::open(&app_url).await.unwrap();
    b.put(&key("apps/a"), Bytes::from_static(b"1"), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(b.get(&key("apps/a")).await.unwrap().unwrap().bytes, "1");
    // A schema the role may not create is refused with the server's reason.
    let missing = url
        .replacen("postgres://tenancy@", &format!("postgres://{role}@"), 1)
        .replace(
            &format!("schema={schema}"),
            &format!("schema={schema}_nope"),
        );
    let e = PostgresBackend::open(&missing).await.unwrap_err();
    assert!(e.to_string().contains("permission denied"), "{e}");
}

#[tokio::test]
async fn options_and_application_name_reach_the_server_with_their_spaces() {
    let Some(url) = testing::postgres_url_or_skip("postgres::options") else {
        return;
    };
    let b = PostgresBackend::open(&format!(
        "{url}&options=-c%20work_mem%3D7MB&application_name=tenancy%20test%2Bone"
    ))
    .await
    .unwrap();
    let client = b.pool().get().await.unwrap();
    let work_mem: String = client.query_one("SHOW work_mem", &[]).await.unwrap().get(0);
    let name: String = client
        .query_one("SHOW application_name", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(work_mem, "7MB");
    assert_eq!(name, "tenancy test+one");
}

#[tokio::test]
async fn a_statement_waiting_on_a_locked_row_times_out_with_a_clear_error() {
    let Some(url) = testing::postgres_url_or_skip("postgres::statement_timeout") else {
        return;
    };
    let b = PostgresBackend::open(&format!("{url}&statement_timeout=1"))
        .await
        .unwrap();
    let v = b
        .put(&key("apps/a"), Bytes::from_static(b"1"), PutMode::Create)
        .await
        .unwrap();
    // Somebody's open transaction holds the row: without a bound, the write
    // would wait for as long as that transaction stays open.
    let mut holder = b.pool().get().await.unwrap();
    let tx = holder.transaction().await.unwrap();
    tx.execute(
        &format!(
            "SELECT 1 FROM \"{}\".objects WHERE key = 'apps/a' FOR UPDATE",
            b.schema()
        ),
        &[],
    )
    .await
    .unwrap();
    let started = Instant::now();
    let e = b
        .put(&key("apps/a"), Bytes::from_static(b"2"), PutMode::Update(v))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Backend { .. }), "{e:?}");
    assert!(e.to_string().contains("57014"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
    tx.rollback().await.unwrap();
    drop(holder);
    assert_eq!(b.get(&key("apps/a")).await.unwrap().unwrap().bytes, "1");
}

#[tokio::test]
async fn a_password_cut_short_by_a_slash_is_refused_and_never_echoed() {
    for url in [
        // A password with '/', '?' or '#' ends the host early: what follows
        // would be shown as the path.
        "postgres://tenancy:20/hunter2@127.0.0.1/db",
        "postgres://tenancy:x?hunter2@127.0.0.1/db",
        "postgres://tenancy:x#hunter2@127.0.0.1/db",
        // One slash short of a URL.
        "postgres:/tenancy:hunter2@db/prod",
        "postgres:tenancy:hunter2@db/prod",
    ] {
        let e = tenancy_state::open(url).await.unwrap_err();
        assert!(matches!(e, Error::InvalidInput { .. }), "{url}: {e:?}");
        assert!(!e.to_string().contains("hunter2"), "{url}: {e}");
    }
}

#[tokio::test]
async fn a_column_of_the_wrong_type_is_reported_as_corrupt_not_a_panic() {
    let Some((url, _)) = one_object_then(
        "postgres::wrong_column",
        "ALTER TABLE {objects} ALTER COLUMN version TYPE INTEGER",
    )
    .await
    else {
        return;
    };
    // A fresh backend: the old one's prepared statements name the old type.
    let b = PostgresBackend::open(&url).await.unwrap();
    let e = b.get(&key("apps/a")).await.unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
    let e = b.list(None).try_collect::<Vec<_>>().await;
    assert!(e.is_ok(), "a listing reads no version: {e:?}");
}
