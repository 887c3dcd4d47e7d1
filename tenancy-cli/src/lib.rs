//! tenancy-cli: the `tenancy` command-line tool for admins and tenant teams.
//! Filled by issue 6.
