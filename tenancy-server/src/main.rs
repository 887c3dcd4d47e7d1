//! The `tenancy-server` binary: parses the command line, prepares the server
//! (see `tenancy_server::server`) and serves until SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use tenancy_server::server::{init_tracing, prepare, Args};

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    let server = match prepare(Args::parse()).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    if let Some(token) = server.generated_admin_token() {
        let token = token.expose();
        println!("admin token (shown once, only its hash is kept): {token}");
    }
    match server.local_addr() {
        Ok(addr) => println!(
            "tenancy-server listening on {addr} (backend {})",
            server.backend()
        ),
        Err(e) => eprintln!("tenancy-server: {e}"),
    }
    if let Some(Ok(addr)) = server.metrics_addr() {
        println!("tenancy-server metrics on http://{addr}/metrics");
    }
    server
        .serve()
        .await
        .map_or_else(fail, |()| ExitCode::SUCCESS)
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("tenancy-server: {e:#}");
    ExitCode::FAILURE
}
