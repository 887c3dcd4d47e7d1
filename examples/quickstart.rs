//! Quickstart: keep versioned state on the in-memory backend and watch a
//! stale compare-and-swap write get refused.

use bytes::Bytes;
use tenancy_core::{Error, MemoryBackend, PutMode, StateBackend, StateKey};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let store = MemoryBackend::new();
    let key = StateKey::new("tenants/acme/v1/stacks/web/prod/state.json")?;

    let v1 = store
        .put(&key, Bytes::from_static(b"{\"serial\":1}"), PutMode::Create)
        .await?;
    println!("created {key} at version {v1}");

    let v2 = store
        .put(
            &key,
            Bytes::from_static(b"{\"serial\":2}"),
            PutMode::Update(v1.clone()),
        )
        .await?;
    println!("updated {key} to version {v2}");

    match store
        .put(
            &key,
            Bytes::from_static(b"{\"serial\":3}"),
            PutMode::Update(v1),
        )
        .await
    {
        Err(e @ Error::Precondition { .. }) => println!("stale write refused as expected: {e}"),
        other => {
            return Err(Error::invalid(format!(
                "stale write was not refused: {other:?}"
            )))
        }
    }

    match StateKey::new("tenants/acme/../globex/secret") {
        Err(e) => println!("crafted key refused: {e}"),
        Ok(k) => return Err(Error::invalid(format!("crafted key {k} was accepted"))),
    }
    Ok(())
}
