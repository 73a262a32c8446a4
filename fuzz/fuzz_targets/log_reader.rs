#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chainrep_fuzz::log_reader::run(data));
