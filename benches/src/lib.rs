//! Shared helpers of the tenancy benches; the benches themselves live in `benches/benches/`.
