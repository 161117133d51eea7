//! The API's inputs: `since`, silence matchers and whole HTTP requests (method, path, query,
//! JSON body) through the real router. Never a panic or a 500; a 4xx carries a JSON error. See
//! `src/agent.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wsguard_fuzz::agent::check_api(data);
});
