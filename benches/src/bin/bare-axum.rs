//! A bare axum server for the load benchmark's baseline: one handler that
//! returns a small JSON body, with no middleware at all.
//!
//! Usage: `bare-axum 127.0.0.1:PORT`.

use axum::routing::get;
use axum::{Json, Router};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".to_string());
    let app = Router::new().route(
        "/v1/tenant",
        get(|| async {
            Json(serde_json::json!({"id": "bare", "status": "active", "plan": "enterprise"}))
        }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app).await
}
