//! `fallback`: curl with a chain of backups.

#![forbid(unsafe_code)]

// A proxy allocates a few small buffers per request and frees them on
// another; mimalloc's per-thread free lists do that at a fraction of
// glibc's cost (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    fallback_chain_cli::main()
}
