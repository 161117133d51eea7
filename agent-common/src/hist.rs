//! Log-linear latency histograms kept per process in the kernel: 4 buckets per power of two from
//! 1 µs (2^10 ns); the last bucket holds everything from ~64 min up. Counting into a bucket is one atomic add, nothing is sampled or
//! lost, and percentiles are read back within the bucket's width (≤ 25 % of the value).

pub const BUCKETS: usize = 128;
const MIN_LOG2: u32 = 10;

/// Which histogram of [`Hists`].
pub mod which {
    pub const HANDSHAKE: usize = 0;
    pub const PING_RTT: usize = 1;
    pub const RESPONSE: usize = 2;
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Hists {
    pub h: [[u64; BUCKETS]; 3],
}

impl Default for Hists {
    fn default() -> Self {
        Hists { h: [[0; BUCKETS]; 3] }
    }
}

/// log2 without a `ctlz` instruction (the BPF backend has none): a branchy binary search.
#[inline(always)]
fn log2(mut v: u64) -> u32 {
    let mut r = 0;
    if v >= 1 << 32 {
        v >>= 32;
        r += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        r += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        r += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        r += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        r += 2;
    }
    if v >= 1 << 1 {
        r += 1;
    }
    r
}

/// Bucket of a latency in nanoseconds.
#[inline(always)]
pub fn bucket(ns: u64) -> usize {
    if ns < 1 << MIN_LOG2 {
        return 0;
    }
    let lg = log2(ns);
    let sub = ((ns >> (lg - 2)) & 3) as usize;
    let i = (lg - MIN_LOG2) as usize * 4 + sub;
    if i >= BUCKETS {
        BUCKETS - 1
    } else {
        i
    }
}

/// `[lo, hi)` nanoseconds of bucket `i` (bucket 0 starts at 0).
pub fn bounds(i: usize) -> (f64, f64) {
    let lg = (i / 4) as u32 + MIN_LOG2;
    let base = (1u64 << lg) as f64;
    let sub = (i % 4) as f64;
    let lo = if i == 0 { 0.0 } else { base * (1.0 + sub / 4.0) };
    (lo, base * (1.0 + (sub + 1.0) / 4.0))
}

/// The `q` quantile (0..1) in nanoseconds, interpolated within its bucket; None if empty.
pub fn quantile(h: &[u64; BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = h.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut seen = 0u64;
    for (i, &n) in h.iter().enumerate() {
        if n == 0 {
            continue;
        }
        if (seen + n) as f64 >= rank {
            let (lo, hi) = bounds(i);
            let frac = ((rank - seen as f64) / n as f64).clamp(0.0, 1.0);
            return Some(lo + (hi - lo) * frac);
        }
        seen += n;
    }
    Some(bounds(BUCKETS - 1).1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_contain_their_values() {
        for ns in [1024u64, 1500, 2047, 2048, 1_000_000, 123_456_789, 2_000_000_000, 10_000_000_000] {
            let (lo, hi) = bounds(bucket(ns));
            assert!(lo <= ns as f64 && (ns as f64) < hi, "{ns} in [{lo},{hi})");
            assert!(bucket(ns) == 0 || (hi - lo) / lo <= 0.25 + 1e-9, "{ns}: [{lo},{hi})");
        }
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        for v in 1..5000u64 {
            assert_eq!(log2(v * 977), 63 - (v * 977).leading_zeros());
        }
    }

    #[test]
    fn quantiles_are_within_a_bucket() {
        let mut h = [0u64; BUCKETS];
        // 90 samples at 1 ms, 10 at 100 ms.
        h[bucket(1_000_000)] += 90;
        h[bucket(100_000_000)] += 10;
        let p50 = quantile(&h, 0.5).unwrap();
        let p95 = quantile(&h, 0.95).unwrap();
        assert!((0.8e6..1.25e6).contains(&p50), "{p50}");
        assert!((0.8e8..1.25e8).contains(&p95), "{p95}");
        assert_eq!(quantile(&[0; BUCKETS], 0.5), None);
    }
}
