#![no_main]
use std::sync::OnceLock;

static HARNESS: OnceLock<fallback_chain_fuzz::UpstreamHarness> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    HARNESS
        .get_or_init(fallback_chain_fuzz::UpstreamHarness::new)
        .exchange(data);
});
