//! The task supervisor of the process driver as a program of its own, for the runtime
//! crate's tests (they cannot run the `mycluster` binary, whose `mycluster supervise` is
//! the same code).

fn main() {
    std::process::exit(mycluster_runtime::supervise::run());
}
