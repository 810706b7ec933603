#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| fallback_chain_fuzz::grpc_status(data));
