//! `fallback`: curl with a chain of backups.

#![forbid(unsafe_code)]
fn main() -> std::process::ExitCode {
    fallback_chain_cli::main()
}
