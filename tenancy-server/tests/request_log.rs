//! The request log stays bounded: a client's `X-Request-Id` reaches the log
//! only when it is one short id of safe characters.
//!
//! A test binary of its own: the test installs a thread-local tracing
//! subscriber, and tracing's per-callsite interest cache can race with
//! other test threads hitting the same callsites without one (in the router
//! binary the capture once came back empty during a full-suite run).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::harness;

/// Log lines written on this thread while it lives (a `set_default` subscriber).
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn is_made_id(id: &str) -> bool {
    // `<12 hex>-<8+ hex counter>`
    id.len() >= 21
        && id.len() <= 29
        && id.as_bytes()[12] == b'-'
        && id
            .bytes()
            .filter(|b| *b != b'-')
            .all(|b| b.is_ascii_hexdigit())
}

#[tokio::test]
async fn a_request_id_is_kept_only_when_short_and_safe_so_logs_stay_bounded() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let h = harness().await;

    let safe = "deploy-42:run_7.A";
    let a = h
        .call("GET", "/healthz", &[("x-request-id", safe)], "")
        .await
        .expect(200);
    assert_eq!(a.header("x-request-id").as_deref(), Some(safe));
    let longest = "x".repeat(64);
    let a = h
        .call("GET", "/healthz", &[("x-request-id", &longest)], "")
        .await;
    assert_eq!(a.header("x-request-id"), Some(longest));

    let huge = "A".repeat(50 * 1024);
    for bad in [
        huge.as_str(),
        &"x".repeat(65),
        "two words",
        "a/b",
        "{\"json\":1}",
        "caf\u{e9}",
        "x\ty",
    ] {
        let a = h
            .call("GET", "/healthz", &[("x-request-id", bad)], "")
            .await
            .expect(200);
        let id = a.header("x-request-id").unwrap();
        let shown: String = bad.chars().take(20).collect();
        assert!(is_made_id(&id), "{shown:?}... gave {id:?}, not a made id");
    }
    // Two ids: neither is trusted.
    let a = h
        .call(
            "GET",
            "/healthz",
            &[("x-request-id", "one"), ("x-request-id", "two")],
            "",
        )
        .await;
    assert_eq!(a.headers.get_all("x-request-id").iter().count(), 1);
    assert!(is_made_id(&a.header("x-request-id").unwrap()));

    let text = logs.text();
    assert!(text.contains(safe), "the capture works: {text}");
    assert!(
        !text.contains(&huge[..65]),
        "a client id over 64 characters reached the log"
    );
    assert!(
        !text.contains("two words") && !text.contains("{\"json\""),
        "{text}"
    );
    assert!(
        text.len() < 16 * 1024,
        "{} bytes of log for 11 small requests",
        text.len()
    );
}

#[tokio::test]
async fn request_lines_name_the_authenticated_tenant_never_its_secret() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let h = harness().await;
    let secret = h.create_tenant("logged", serde_json::json!({})).await;
    let before = logs.text().len();

    h.tenant(&secret, "GET", "/v1/tenant", serde_json::Value::Null)
        .await
        .expect(200);
    let text = logs.text()[before..].to_string();
    let finished: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("finished processing request"))
        .collect();
    assert_eq!(finished.len(), 1, "{text}");
    assert!(
        finished[0].contains(r#"tenant="logged""#) && finished[0].contains(r#"route="/v1/tenant""#),
        "the request line names its tenant: {text}"
    );

    // A wrong key names no tenant; no line ever holds a secret or the admin token.
    let before = logs.text().len();
    h.tenant("tk_nope", "GET", "/v1/tenant", serde_json::Value::Null)
        .await
        .expect(401);
    let text = logs.text()[before..].to_string();
    assert!(
        text.contains("finished processing request") && !text.contains("tenant="),
        "{text}"
    );
    let all = logs.text();
    assert!(
        !all.contains(&secret) && !all.contains(common::ADMIN),
        "{all}"
    );
}
