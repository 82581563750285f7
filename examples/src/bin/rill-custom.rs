//! The `rill` command line with the example `dedupe` operator registered:
//! `cargo run -p rill-examples --bin rill-custom -- run examples/dedupe.yaml`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut registry = rill::registry();
    rill_examples::register(&mut registry);
    rill::cli::main(registry)
}
