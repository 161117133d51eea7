//! Differential fuzzing of the frame parser: the first input bytes choose the cut points, the
//! rest is the stream. Feeding it whole, in chunks, and the way the probe drives `consume` must
//! give identical counters, close codes, headers and error outcome. See `src/lib.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wsguard_fuzz::check_frame_split(data);
});
