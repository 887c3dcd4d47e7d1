//! Embedding: a store by URL, a registry, a tenant, its state with history, a lock.
use serde_json::json;
use std::time::Duration;
use tenancy_core::TenantRegistry;
use tenancy_core::{LockKey, LockManager, LockRequest, NewTenant, Secret, TenantId};
use tenancy_lock::{StoreLockManager, TenantLocks};
use tenancy_state::{stack::StackStore, StoreRegistry, TenantScoped};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?; // or s3://bucket/prefix, memory://
    let store = tenancy_state::open(&dir.path().display().to_string()).await?;
    let registry = StoreRegistry::new(store.clone());
    let admin = Secret::new("an admin password");
    registry.bootstrap(&admin).await?;
    let new = NewTenant::new(TenantId::new("acme")?);
    let acme = registry.create(new).await?.tenant;

    let stacks = StackStore::new(TenantScoped::for_tenant(store.clone(), &acme)?);
    let (v1, v2) = (json!({"replicas": 2}), json!({"replicas": 3}));
    stacks.save("web", "prod", &v1, None).await?;
    stacks.save("web", "prod", &v2, Some(1)).await?;
    let history = stacks.history("web", "prod").await?;
    println!("acme's web/prod has {} versions", history.len());

    let locks = TenantLocks::new(StoreLockManager::new(store), acme.id);
    let key = LockKey::stack_env("web", "prod")?;
    let req = LockRequest::new(key, Duration::from_secs(60));
    let lease = locks.try_acquire(&req).await?;
    assert!(locks.try_acquire(&req).await.is_err(), "one holder");
    println!("locked {} (token {})", lease.key, lease.fencing_token);
    Ok(locks.release(&lease.key, lease.lock_id).await?)
}
