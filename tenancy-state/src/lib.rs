//! tenancy-state: `StateBackend` implementations on object_store (memory,
//! local files, S3), the tenant-scoping wrapper `TenantScoped`, and stack
//! state with history. Filled by issue 3.
