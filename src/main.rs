use std::process::ExitCode;

fn main() -> ExitCode {
    rill::cli::main(rill::registry())
}
