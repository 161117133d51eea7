//! Differential fuzzing of the upgrade-handshake scanner: the first input bytes choose the side
//! and the cut points, the rest is the head. Whole, chunked and probe-style scans must give the
//! same verdict, consumed count and found flag. See `src/lib.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wsguard_fuzz::check_http_scan(data);
});
