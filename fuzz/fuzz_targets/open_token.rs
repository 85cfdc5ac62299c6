#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| heartbeat_core::internal::fuzz_open_token(data));
