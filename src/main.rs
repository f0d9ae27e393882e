//! The `oam-trust` binary: parse the command line, hand over to the library.
use clap::Parser;

fn main() -> std::process::ExitCode {
    oam_trust::cli::Cli::parse().run()
}
