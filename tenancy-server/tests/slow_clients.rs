//! Slow and idle clients against the real binary over TCP, under a low file
//! descriptor limit: hundreds of half-sent and idle connections must not
//! stop `/healthz` or an authenticated request from answering, must not run
//! the server out of file descriptors, and a half-sent request must not keep
//! a SIGTERM'ed server alive past its drain timeout. Settings go through
//! the environment (`TENANCY_*`), so the same test can be pointed at an
//! older binary (`TENANCY_SERVER_BIN=...`) to see it fail.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN: &str = "slow-clients-admin-token-0123";

struct Server {
    child: Child,
    addr: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// The binary under `ulimit -n fds`, with `env` settings.
    fn start(fds: u32, env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let mut cmd = Command::new("bash");
        cmd.args([
            "-c",
            &format!("ulimit -n {fds} && exec \"$0\" \"$@\""),
            &std::env::var("TENANCY_SERVER_BIN")
                .unwrap_or_else(|_| env!("CARGO_BIN_EXE_tenancy-server").to_string()),
            "--listen",
            "127.0.0.1:0",
            "--backend",
            &format!("file://{}", dir.path().join("data").display()),
        ])
        .env("TENANCY_ADMIN_TOKEN", ADMIN)
        .env("TENANCY_BCRYPT_COST", "4")
        .env("TENANCY_METRICS_LISTEN", "off")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut addr = String::new();
        let mut line = String::new();
        while out.read_line(&mut line).unwrap() > 0 {
            if let Some(rest) = line.strip_prefix("tenancy-server listening on ") {
                addr = rest.split_whitespace().next().unwrap().to_string();
                break;
            }
            line.clear();
        }
        assert!(!addr.is_empty(), "the server did not start");
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || for _ in out.lines() {});
        Server {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    /// One HTTP/1.1 request on a fresh connection: the status code, or an error.
    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect(&self.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes())?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        let code = answer
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no status line in {answer:?}")))?;
        Ok((code, answer))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn hundreds_of_half_sent_and_idle_connections_leave_the_server_answering() {
    let s = Server::start(
        256,
        &[
            ("TENANCY_HEADER_READ_TIMEOUT_SECS", "2"),
            ("TENANCY_IDLE_TIMEOUT_SECS", "2"),
            ("TENANCY_MAX_CONNECTIONS", "150"),
        ],
    );
    let (code, answer) = s
        .request(
            "POST",
            "/v1/tenants",
            &[
                ("authorization", &format!("Bearer {ADMIN}")),
                ("content-type", "application/json"),
            ],
            r#"{"id":"acme"}"#,
        )
        .unwrap();
    assert_eq!(code, 201, "{answer}");
    let secret = answer
        .split("\"secret\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();

    // 200 half-sent requests and 100 silent connections: more than the
    // connection cap, and more than the file descriptor limit.
    let mut held = Vec::new();
    for i in 0..300 {
        let Ok(mut c) = TcpStream::connect(&s.addr) else {
            continue;
        };
        if i % 3 != 0 {
            let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nHost: slow\r\nX-Slow: ");
        }
        held.push(c);
    }
    assert!(held.len() >= 250, "only {} connections opened", held.len());

    let started = Instant::now();
    let health = s.request("GET", "/healthz", &[], "");
    let me = s.request("GET", "/v1/tenant", &[("x-api-key", &secret)], "");
    let waited = started.elapsed();
    assert_eq!(
        health.as_ref().map(|r| r.0).ok(),
        Some(200),
        "/healthz: {health:?}"
    );
    assert_eq!(
        me.as_ref().map(|r| r.0).ok(),
        Some(200),
        "/v1/tenant: {me:?}"
    );

    // The server closed the slow connections itself.
    let mut closed = 0;
    for mut c in held {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 512];
        // Data (an error answer) or end of file: the server let go.
        if c.read(&mut buf).is_ok() {
            closed += 1;
        }
    }
    assert!(
        closed >= 250,
        "only {closed} slow connections were closed by the server"
    );
    let log = s.log();
    assert!(
        !log.contains("Too many open files"),
        "the server ran out of file descriptors (answered after {waited:?}):\n{log}"
    );
}

#[test]
fn a_half_sent_request_does_not_keep_a_terminated_server_alive() {
    let mut s = Server::start(
        1024,
        &[
            ("TENANCY_HEADER_READ_TIMEOUT_SECS", "600"),
            ("TENANCY_IDLE_TIMEOUT_SECS", "600"),
            ("TENANCY_DRAIN_TIMEOUT_SECS", "2"),
        ],
    );
    let mut slow = TcpStream::connect(&s.addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: slow\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let pid = s.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let started = Instant::now();
    let mut exited = None;
    while started.elapsed() < Duration::from_secs(20) {
        if let Some(status) = s.child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(slow);
    let status =
        exited.unwrap_or_else(|| panic!("still running 20 s after SIGTERM (drain timeout 2 s)"));
    assert!(status.success(), "{status:?}");
}
