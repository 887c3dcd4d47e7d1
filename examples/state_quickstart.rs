//! Embed tenant-scoped stack state on local files.
//!
//! Opens a shared local-file store in a temp dir, scopes it to tenant
//! `acme` (everything lands under `tenants/acme/v1/`), saves a few versions
//! of a stack's state with optimistic concurrency, shows that a stale save
//! is refused, reads the history, rolls back, and prunes.
//!
//! Run: `cargo run -p tenancy-examples --example state_quickstart`

use serde_json::json;
use tenancy_core::{Error, StateBackendExt, TenantId};
use tenancy_state::stack::StackStore;
use tenancy_state::{LocalBackend, TenantScoped};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let dir = tempfile::tempdir().map_err(|e| Error::backend("local", e))?;
    let shared = LocalBackend::open(dir.path())?;
    let acme = TenantScoped::new(shared.clone(), &TenantId::new("acme")?, "v1")?;
    let stacks = StackStore::new(acme).with_retention(10);

    // first save: expected None means "this stack/env must be new"
    let v1 = stacks
        .save(
            "web",
            "prod",
            &json!({"image": "web:1.0", "replicas": 2}),
            None,
        )
        .await?;
    println!("saved web/prod serial {}", v1.serial);

    // read, change, save with the serial we read
    let current = stacks
        .current("web", "prod")
        .await?
        .ok_or_else(|| Error::not_found("stack web/prod"))?;
    let mut doc = current.document.clone();
    doc["replicas"] = json!(4);
    let v2 = stacks
        .save("web", "prod", &doc, Some(current.serial))
        .await?;
    println!("saved web/prod serial {} (replicas 4)", v2.serial);

    // someone still holding serial 1 is refused
    match stacks
        .save("web", "prod", &json!({"image": "web:0.9"}), Some(v1.serial))
        .await
    {
        Err(Error::Precondition { what }) => println!("stale save refused: {what}"),
        other => println!("unexpected: {other:?}"),
    }

    // history and rollback
    for e in stacks.history("web", "prod").await? {
        // saved_at is unknown only for plain JSON on a backend without times
        let at = e
            .saved_at
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "-".into());
        println!("  history: serial {} at {at} ({} bytes)", e.serial, e.size);
    }
    let v3 = stacks.rollback("web", "prod", 1, Some(v2.serial)).await?;
    let now = stacks.version("web", "prod", v3.serial).await?;
    println!(
        "rolled back to serial 1 as serial {}: {}",
        v3.serial, now.document
    );
    let pruned = stacks.prune("web", "prod", 2).await?;
    println!("pruned {pruned} old version(s)");

    // what the shared store holds: everything below the tenant's prefix
    for key in shared.list_keys(None).await? {
        println!("  stored: {key}");
    }
    Ok(())
}
