//! tenancy-lock: leased locks with fencing tokens, in memory and on any
//! `StateBackend`'s compare-and-swap, plus the tenant-namespacing wrapper.
//! Filled by issue 4.
