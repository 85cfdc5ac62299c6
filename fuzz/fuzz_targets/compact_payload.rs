#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| heartbeat_core::internal::fuzz_compact_payload(data));
