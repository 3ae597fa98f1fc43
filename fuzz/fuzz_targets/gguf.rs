//! Fuzz target `gguf`: see `moram_fuzz::TARGETS`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = moram_fuzz::run("gguf", data);
});
