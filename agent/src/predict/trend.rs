//! Trend models over one resource's series of `(t seconds, value)`: ordinary least squares over
//! a short and a long window, and Holt's double exponential smoothing with smoothing constants
//! derived from the time between samples (so a 500 ms and a 5 s interval behave alike).
//! A trend is only trusted when the models agree (`Trend::agree`), over enough evidence: half
//! the short window, or, for a limit that is near in time, a strong fit whose span is a fair
//! share of the ETA it claims (evidence scaled to urgency, `docs/predictions.md`).

use std::collections::VecDeque;

/// A least-squares line over one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// Units per second.
    pub slope: f64,
    /// Standard error of the slope.
    pub slope_se: f64,
    /// The fitted value at the newest sample.
    pub level: f64,
    /// Coefficient of determination (0 for a perfectly flat series).
    pub r2: f64,
    pub n: usize,
    /// Seconds between the oldest and newest sample used.
    pub span: f64,
}

/// Least squares of `points` (at least 3 at distinct times).
pub fn least_squares(points: &[(f64, f64)]) -> Option<Fit> {
    let n = points.len();
    if n < 3 {
        return None;
    }
    let nf = n as f64;
    let mt = points.iter().map(|p| p.0).sum::<f64>() / nf;
    let mv = points.iter().map(|p| p.1).sum::<f64>() / nf;
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for &(t, v) in points {
        let (dt, dv) = (t - mt, v - mv);
        sxx += dt * dt;
        sxy += dt * dv;
        syy += dv * dv;
    }
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let ss_res = (syy - slope * sxy).max(0.0);
    let slope_se = (ss_res / (nf - 2.0) / sxx).sqrt();
    let r2 = if syy > 0.0 { (1.0 - ss_res / syy).clamp(0.0, 1.0) } else { 0.0 };
    let last = points[n - 1].0;
    Some(Fit { slope, slope_se, level: mv + slope * (last - mt), r2, n, span: last - points[0].0 })
}

/// Holt's linear (double exponential) smoothing for irregular sampling: each update uses
/// `alpha = 1 - exp(-dt / tau_level)` and `beta = 1 - exp(-dt / tau_trend)`.
#[derive(Debug, Clone, Default)]
pub struct Holt {
    pub level: f64,
    /// Units per second.
    pub trend: f64,
    last_t: Option<f64>,
    tau_level: f64,
    tau_trend: f64,
    pub updates: u64,
}

impl Holt {
    pub fn new(tau_level: f64, tau_trend: f64) -> Self {
        Holt { tau_level: tau_level.max(1e-3), tau_trend: tau_trend.max(1e-3), ..Default::default() }
    }

    pub fn update(&mut self, t: f64, v: f64) {
        let Some(last) = self.last_t else {
            self.level = v;
            self.trend = 0.0;
            self.last_t = Some(t);
            self.updates = 1;
            return;
        };
        let dt = t - last;
        if dt <= 0.0 {
            return;
        }
        let a = 1.0 - (-dt / self.tau_level).exp();
        let b = 1.0 - (-dt / self.tau_trend).exp();
        let predicted = self.level + self.trend * dt;
        let level = a * v + (1.0 - a) * predicted;
        self.trend = b * (level - self.level) / dt + (1.0 - b) * self.trend;
        self.level = level;
        self.last_t = Some(t);
        self.updates += 1;
    }
}

/// What the models say about one resource now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Trend {
    pub short: Option<Fit>,
    pub long: Option<Fit>,
    pub holt_trend: Option<f64>,
    /// Short-window growth is significant (slope > 2 standard errors), the long window and Holt
    /// also grow, and the evidence is enough: the short window covers at least half its length
    /// with a fit of r² >= `min_r2`, or the fit is urgent and strong (`urgent`).
    pub agree: bool,
    /// Agreement came from the urgency path: a strong fit ([`Urgency`]) spanning at least
    /// `eta_ratio` × its own ETA; the slope is then the fit's alone (Holt lags a young series).
    pub urgent: bool,
    /// Combined slope (mean of the short-window fit and Holt) and its uncertainty (the fit's
    /// standard error and half the disagreement between the two, in quadrature).
    pub slope: f64,
    pub slope_se: f64,
    /// Current level (short-window fit at the newest sample, else the newest value).
    pub level: f64,
    /// 0..1: window coverage × fit quality × agreement.
    pub confidence: f64,
}

/// How much evidence a trend needs (`[predict] min_fit_r2`, `urgent_evidence_ratio`,
/// `urgent_min_span`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Urgency {
    /// Any trusted short-window fit explains at least this share of the variance (a jump at
    /// the end of a flat window is significant but explains little).
    pub min_r2: f64,
    /// The fit must span at least this share of the ETA it gives (0 turns the path off).
    pub eta_ratio: f64,
    /// ...and at least this many seconds.
    pub min_span: f64,
}

/// A strong fit: this many samples at least...
pub const URGENT_MIN_SAMPLES: usize = 10;
/// ...explaining this much of the variance...
pub const URGENT_MIN_R2: f64 = 0.9;
/// ...with a slope this many standard errors above zero.
pub const URGENT_MIN_T: f64 = 4.0;

impl Urgency {
    /// The fit `s` is strong, and long enough for the time to `target` it predicts.
    pub fn trusts(&self, s: &Fit, target: f64) -> bool {
        if self.eta_ratio <= 0.0 || s.slope <= 0.0 || s.n < URGENT_MIN_SAMPLES || s.r2 < URGENT_MIN_R2 {
            return false;
        }
        if s.slope <= URGENT_MIN_T * s.slope_se {
            return false;
        }
        let eta = (target - s.level).max(0.0) / s.slope;
        s.span >= self.min_span && s.span >= self.eta_ratio * eta
    }
}

/// One resource's recent values and its Holt state.
#[derive(Debug, Clone)]
pub struct Model {
    series: VecDeque<(f64, f64)>,
    holt: Holt,
}

impl Model {
    pub fn new(short_window: f64) -> Self {
        Model { series: VecDeque::new(), holt: Holt::new(short_window / 20.0, short_window / 3.0) }
    }

    /// Add a sample and forget those older than `long_window`.
    pub fn push(&mut self, t: f64, v: f64, long_window: f64) {
        if self.series.back().is_some_and(|&(lt, _)| t <= lt) {
            return;
        }
        self.series.push_back((t, v));
        while self.series.front().is_some_and(|&(ft, _)| t - ft > long_window) {
            self.series.pop_front();
        }
        self.holt.update(t, v);
    }

    /// Lowest value within `window` seconds of `now`.
    pub fn min_since(&self, now: f64, window: f64) -> Option<f64> {
        self.series.iter().filter(|p| now - p.0 <= window).map(|p| p.1).reduce(f64::min)
    }

    /// `target`: the level that counts as exhausted (for the urgency path).
    pub fn trend(&self, now: f64, short_window: f64, target: f64, urgency: &Urgency) -> Trend {
        let recent: Vec<(f64, f64)> = self.series.iter().copied().filter(|p| now - p.0 <= short_window).collect();
        let all: Vec<(f64, f64)> = self.series.iter().copied().collect();
        let short = least_squares(&recent);
        let long = least_squares(&all);
        let holt_trend = (self.holt.updates >= 3).then_some(self.holt.trend);
        let newest = self.series.back().map(|p| p.1).unwrap_or(0.0);
        let mut t = Trend { short, long, holt_trend, level: newest, ..Default::default() };
        let (Some(s), Some(l), Some(h)) = (short, long, holt_trend) else { return t };
        t.level = s.level;
        let covered = s.span >= 0.5 * short_window && s.r2 >= urgency.min_r2;
        let grows = s.slope > 2.0 * s.slope_se && s.slope > 0.0 && l.slope > 0.0 && h > 0.0;
        t.urgent = !covered && grows && urgency.trusts(&s, target);
        t.agree = (covered || t.urgent) && grows;
        // Coverage: the fraction of the short window the samples span (for an urgent fit, of
        // the span it needed, which it has).
        let coverage = if t.urgent { 1.0 } else { (s.span / short_window).clamp(0.0, 1.0) };
        if t.urgent {
            t.slope = s.slope;
            t.slope_se = s.slope_se;
        } else {
            t.slope = (s.slope + h) / 2.0;
            t.slope_se = (s.slope_se.powi(2) + ((s.slope - h) / 2.0).powi(2)).sqrt();
        }
        let agreement = if t.agree { 1.0 } else { 0.5 };
        t.confidence = coverage * (0.5 + 0.5 * s.r2) * agreement;
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_squares_exact_line() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64 * 5.0, 100.0 + 2.0 * i as f64 * 5.0)).collect();
        let f = least_squares(&pts).unwrap();
        assert!((f.slope - 2.0).abs() < 1e-9);
        assert!(f.slope_se < 1e-6);
        assert!((f.level - 190.0).abs() < 1e-6);
        assert!((f.r2 - 1.0).abs() < 1e-9);
        assert_eq!(f.span, 45.0);
        assert!(least_squares(&pts[..2]).is_none());
    }

    #[test]
    fn holt_follows_a_line_at_any_interval() {
        for dt in [0.5, 5.0, 30.0] {
            let mut h = Holt::new(30.0, 200.0);
            let mut t = 0.0;
            while t < 3600.0 {
                h.update(t, 10.0 + 0.25 * t);
                t += dt;
            }
            assert!((h.trend - 0.25).abs() < 0.01, "dt {dt}: trend {}", h.trend);
        }
    }

    #[test]
    fn flat_noise_does_not_agree() {
        let mut m = Model::new(600.0);
        let mut x = 12345u64;
        for i in 0..720 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            m.push(i as f64 * 5.0, 500.0 + (x % 41) as f64 - 20.0, 3600.0);
        }
        let t = m.trend(719.0 * 5.0, 600.0, 1000.0, &URGENT);
        assert!(!t.agree || t.slope < 0.05, "{t:?}");
    }

    const URGENT: Urgency = Urgency { min_r2: 0.6, eta_ratio: 1.0, min_span: 30.0 };

    #[test]
    fn a_near_limit_is_trusted_once_watched_as_long_as_its_eta() {
        // 2.5 per second from 56 toward 396 (the live case): ETA at t is (340 - 2.5 t) / 2.5.
        let mut m = Model::new(600.0);
        let mut first = None;
        for i in 0..140 {
            let t = i as f64;
            m.push(t, (56.0 + 2.5 * t).floor(), 3600.0);
            let tr = m.trend(t, 600.0, 396.0, &URGENT);
            if tr.agree && first.is_none() {
                first = Some((t, tr));
            }
        }
        let (t, tr) = first.expect("never trusted");
        assert!(tr.urgent && (67.0..=70.0).contains(&t), "t={t} {tr:?}");
        assert!((tr.slope - 2.5).abs() < 0.05, "{tr:?}");
        // Off: only half the short window (300 s) would do.
        let off = Urgency { eta_ratio: 0.0, ..URGENT };
        assert!(!m.trend(139.0, 600.0, 396.0, &off).agree);
    }

    #[test]
    fn a_jump_is_not_a_strong_fit() {
        // Flat at 300 for 60 s, then 700 more at once: the line through a step explains at most
        // 3/4 of the variance.
        let mut m = Model::new(600.0);
        for i in 0..120 {
            let v = if i < 60 { 300.0 } else { 1000.0 };
            m.push(i as f64, v, 3600.0);
            let tr = m.trend(i as f64, 600.0, 1014.0, &URGENT);
            assert!(!tr.urgent, "i={i} {tr:?}");
        }
    }
}
