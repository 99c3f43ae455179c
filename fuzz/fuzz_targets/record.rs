#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| typed_kv_fuzz::targets::record(data));
