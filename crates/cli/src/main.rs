//! `fallback`: curl with a chain of backups.

fn main() -> std::process::ExitCode {
    fallback_chain_cli::main()
}
