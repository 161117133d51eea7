//! Short human formats for table cells. Counts stay exact (an operator compares them with
//! other tools); only rates, sizes and durations are rounded.

pub fn rate(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 100.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

pub fn bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = v.max(0.0);
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0}{}", UNITS[0])
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}

/// Seconds as `45s`, `3m12s`, `2h05m`, `3d04h`.
pub fn secs(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        return "-".into();
    }
    let s = s as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

pub fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v < 10.0 => format!("{v:.2}ms"),
        Some(v) => format!("{v:.0}ms"),
        None => "-".into(),
    }
}

pub fn pct(ratio: Option<f64>) -> String {
    ratio.map_or("-".into(), |r| format!("{:.0}%", r * 100.0))
}

/// `s` cut to `n` characters (with `…` when cut).
pub fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    if n == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(n.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The time part of an RFC 3339 timestamp (`2026-01-02T03:04:05Z` → `03:04:05`).
pub fn clock(ts: &str) -> &str {
    ts.split_once('T').map_or(ts, |(_, t)| t.get(..8).unwrap_or(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(rate(0.0), "0");
        assert_eq!(rate(2.5), "2.5");
        assert_eq!(rate(1234.0), "1234");
        assert_eq!(rate(25_000.0), "25.0k");
        assert_eq!(bytes(512.0), "512B");
        assert_eq!(bytes(3.0 * 1024.0 * 1024.0), "3.0MiB");
        assert_eq!(secs(45.2), "45s");
        assert_eq!(secs(192.0), "3m12s");
        assert_eq!(secs(7500.0), "2h05m");
        assert_eq!(secs(f64::NAN), "-");
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
        assert_eq!(cut("abc", 0), "");
        assert_eq!(clock("2026-01-02T03:04:05.123Z"), "03:04:05");
        assert_eq!(pct(Some(0.456)), "46%");
    }
}
