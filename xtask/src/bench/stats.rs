//! Medians, percentiles and ratios over repeated runs.

/// The median of `xs` (mean of the two middle values for an even count); None when empty or
/// when any value is not finite.
pub fn median(xs: &[f64]) -> Option<f64> {
    percentile(xs, 50.0)
}

/// Linear-interpolated percentile `p` (0..=100) of `xs`.
pub fn percentile(xs: &[f64], p: f64) -> Option<f64> {
    if xs.is_empty() || xs.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = (p.clamp(0.0, 100.0) / 100.0) * (v.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    Some(v[lo] + (v[hi] - v[lo]) * (rank - lo as f64))
}

/// `on / off`, None when `off` is zero or either side is missing.
pub fn ratio(on: Option<f64>, off: Option<f64>) -> Option<f64> {
    match (on, off) {
        (Some(a), Some(b)) if b != 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
        _ => None,
    }
}

/// A ratio as a signed percentage change: 1.034 -> +3.4.
pub fn pct(ratio: f64) -> f64 {
    (ratio - 1.0) * 100.0
}

/// Least-squares slope of log(y) over log(x): 1.0 is linear growth, 2.0 quadratic.
pub fn loglog_slope(points: &[(f64, f64)]) -> Option<f64> {
    let pts: Vec<(f64, f64)> = points.iter().filter(|(x, y)| *x > 0.0 && *y > 0.0).map(|(x, y)| (x.ln(), y.ln())).collect();
    if pts.len() < 2 {
        return None;
    }
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn percentiles_interpolate() {
        let xs: Vec<f64> = (1..=101).map(f64::from).collect();
        assert_eq!(percentile(&xs, 0.0), Some(1.0));
        assert_eq!(percentile(&xs, 99.0), Some(100.0));
        assert_eq!(percentile(&xs, 100.0), Some(101.0));
        assert_eq!(percentile(&[10.0, 20.0], 25.0), Some(12.5));
    }

    #[test]
    fn ratios_and_percent() {
        assert_eq!(ratio(Some(103.0), Some(100.0)), Some(1.03));
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
        assert!((pct(1.034) - 3.4).abs() < 1e-9);
    }

    #[test]
    fn loglog_slope_detects_linear_and_quadratic() {
        let lin = [(1e3, 2.0), (1e4, 20.0), (5e4, 100.0)];
        assert!((loglog_slope(&lin).unwrap() - 1.0).abs() < 1e-9);
        let quad = [(1.0, 1.0), (10.0, 100.0), (100.0, 10000.0)];
        assert!((loglog_slope(&quad).unwrap() - 2.0).abs() < 1e-9);
    }
}
