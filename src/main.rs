use std::process::ExitCode;

/// Records are small, short-lived allocations freed on another thread than the one that made
/// them; mimalloc handles that pattern far better than glibc's allocator (W0: see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    rill::cli::main(rill::registry())
}
