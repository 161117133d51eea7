//! Time to limit with an interval, and the probability of reaching the limit within a horizon.

use serde::{Deserialize, Serialize};

/// Seconds until `target` is reached at the current slope, with a ~95% interval from the
/// slope's uncertainty (slope ± 2 standard errors).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Eta {
    pub seconds: f64,
    /// At the fastest plausible slope.
    pub low: f64,
    /// At the slowest plausible slope; None when that slope is not positive (maybe never).
    pub high: Option<f64>,
}

/// ETA from `level` to `target` growing at `slope` ± `se` per second. None when not growing.
pub fn estimate(level: f64, target: f64, slope: f64, se: f64) -> Option<Eta> {
    let remaining = target - level;
    if remaining <= 0.0 {
        return Some(Eta { seconds: 0.0, low: 0.0, high: Some(0.0) });
    }
    if slope <= 0.0 || !slope.is_finite() {
        return None;
    }
    let fast = slope + 2.0 * se;
    let slow = slope - 2.0 * se;
    Some(Eta { seconds: remaining / slope, low: remaining / fast, high: (slow > 0.0).then(|| remaining / slow) })
}

/// P(slope ≥ remaining / horizon) for a slope distributed N(slope, se²); the spread is at least
/// 10% of the slope so that a perfect fit does not claim certainty.
pub fn p_within(remaining: f64, slope: f64, se: f64, horizon: f64) -> f64 {
    if remaining <= 0.0 {
        return 1.0;
    }
    if horizon <= 0.0 {
        return 0.0;
    }
    let needed = remaining / horizon;
    let spread = se.max(0.1 * slope.abs()).max(1e-9);
    normal_cdf((slope - needed) / spread)
}

/// Standard normal CDF (Abramowitz–Stegun 7.1.26 erf, |error| < 1.5e-7).
pub fn normal_cdf(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    if z >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_and_interval() {
        let e = estimate(500.0, 1000.0, 1.0, 0.1).unwrap();
        assert_eq!(e.seconds, 500.0);
        assert!((e.low - 500.0 / 1.2).abs() < 1e-9);
        assert!((e.high.unwrap() - 500.0 / 0.8).abs() < 1e-9);
        assert_eq!(estimate(500.0, 1000.0, 1.0, 1.0).unwrap().high, None);
        assert_eq!(estimate(500.0, 1000.0, -1.0, 0.1), None);
        assert_eq!(estimate(1000.0, 1000.0, 0.0, 0.0).unwrap().seconds, 0.0);
    }

    #[test]
    fn probability_within_horizon() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.96) - 0.975).abs() < 1e-3);
        assert!(p_within(100.0, 1.0, 0.01, 1000.0) > 0.99);
        assert!(p_within(100.0, 0.01, 0.001, 1000.0) < 0.01);
        assert_eq!(p_within(0.0, 0.0, 0.0, 1.0), 1.0);
    }
}
