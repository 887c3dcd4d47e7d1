//! tenancy-server: an example multi-tenant axum server. Filled by issue 7.
