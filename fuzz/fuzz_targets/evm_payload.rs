#![no_main]
// The body is shared with tests/fuzz_corpus.rs: see targets/mod.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| x402_gate_fuzz::evm_payload::run(data));
