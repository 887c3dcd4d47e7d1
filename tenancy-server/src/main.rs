//! The `tenancy-server` binary: parses the command line, prepares the server
//! (see `tenancy_server::server`) and serves until SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use tenancy_server::server::{init_tracing, prepare, Args};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = args.check() {
        eprintln!("tenancy-server: {e}");
        return ExitCode::from(2);
    }
    init_tracing(args.log_format);
    let server = match prepare(args).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let addr = server.local_addr();
    if let Some(token) = server.generated_admin_token() {
        let token = token.expose();
        println!("admin token (shown once, only its hash is kept): {token}");
        let url = match &addr {
            Ok(a) => format!("http://{a}"),
            Err(_) => "http://ADDRESS".to_string(),
        };
        println!(
            "log in with: tenancy --backend {url} admin login (it asks for this token; or pipe it to --password-stdin)"
        );
    }
    match addr {
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
