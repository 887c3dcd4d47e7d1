//! The `tenancy` binary: everything lives in the library, see [`tenancy_cli::run`].

fn main() {
    std::process::exit(tenancy_cli::run());
}
