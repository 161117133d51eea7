//! The config loader on arbitrary text: a config or an error naming the file, never a panic; a
//! parsed config written back as TOML parses to the same config. See `src/agent.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wsguard_fuzz::agent::check_config(data);
});
