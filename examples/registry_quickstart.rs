//! Registry quickstart: bootstrap a tenant registry on a store, create a
//! tenant, authenticate it by id and by key alone, and take quota with
//! atomic reservations until the plan's limit refuses.
//!
//! Run: `cargo run -p tenancy-examples --example registry_quickstart`

use std::sync::Arc;

use tenancy_core::credentials::MIN_BCRYPT_COST;
use tenancy_core::{
    Error, MemoryBackend, NewTenant, Plan, Resource, Secret, TenantId, TenantRegistry, UsageEvent,
};
use tenancy_state::StoreRegistry;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // Any StateBackend works: tenancy-state offers local files and S3.
    // The low bcrypt cost keeps the example instant; production keeps the default (10).
    let registry =
        StoreRegistry::new(Arc::new(MemoryBackend::new())).with_bcrypt_cost(MIN_BCRYPT_COST);

    registry
        .bootstrap(&Secret::new("correct horse battery staple"))
        .await?;
    registry
        .verify_admin(&Secret::new("correct horse battery staple"))
        .await?;
    println!("registry bootstrapped; admin credential verified");

    let created = registry
        .create(NewTenant {
            display_name: Some("Notifications".into()),
            email: Some("ops@ntfy.example".into()),
            plan: Plan::Free,
            secret_prefix: Some("ntfy".into()),
            ..NewTenant::new(TenantId::new("ntfy")?)
        })
        .await?;
    let tenant = &created.tenant;
    println!(
        "created tenant {} on plan {} (generation {}); its secret is shown once: {}",
        tenant.id,
        tenant.plan,
        tenant.credential.generation,
        created.secret.expose()
    );

    let by_id = registry.authenticate(&tenant.id, &created.secret).await?;
    let by_key = registry.authenticate_key(&created.secret).await?;
    println!(
        "authenticated as {} by id and as {} by key alone",
        by_id.id, by_key.id
    );
    match registry
        .authenticate(&tenant.id, &Secret::new("ntfy_wrong"))
        .await
    {
        Err(e @ Error::Unauthorized { .. }) => println!("wrong secret refused: {e}"),
        other => return Err(Error::invalid(format!("wrong secret accepted: {other:?}"))),
    }

    // The free plan allows 5 concurrent jobs: the sixth reservation is refused.
    let limit = tenant.limits().max_concurrent_jobs;
    let mut jobs = Vec::new();
    loop {
        match registry
            .reserve(&tenant.id, Resource::ConcurrentJobs, 1)
            .await
        {
            Ok(r) => {
                registry.commit(&r).await?;
                jobs.push(r);
            }
            Err(e @ Error::QuotaExceeded { .. }) => {
                println!(
                    "reserved {} of {limit} concurrent jobs; then: {e}",
                    jobs.len()
                );
                break;
            }
            Err(e) => return Err(e),
        }
    }
    // A job finishes: record it and give its slot back.
    if let Some(done) = jobs.pop() {
        registry
            .record_usage(&tenant.id, UsageEvent::JobCompleted)
            .await?;
        registry.release(&done).await?;
    }
    let usage = registry.usage(&tenant.id).await?;
    println!(
        "usage: {} jobs active, {} completed",
        usage.jobs_active, usage.jobs_completed
    );
    Ok(())
}
