//! A tiny annotation templater: `{{ .value }}`, `{{ .labels.NAME }}` (also Prometheus-style
//! `{{ $value }}` and `{{ $labels.NAME }}`), `{{ .threshold }}`, `{{ .severity }}` and, for
//! forecast rules, `{{ .forecast.NAME }}` (`eta`, `eta_low`, `eta_high`, `trigger`, `usage`, ...;
//! see `predict::Forecast::field`).
//! Unknown placeholders render as an empty string; text outside `{{ }}` is copied as is.

use super::Labels;
use crate::predict::Forecast;

/// Values a template can refer to.
pub struct Context<'a> {
    pub labels: &'a Labels,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    pub severity: &'a str,
    pub forecast: Option<&'a Forecast>,
}

/// Numbers as people read them: integers without a fraction, others with up to 3 decimals.
pub fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

pub fn render(template: &str, ctx: &Context) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        out.push_str(&resolve(after[..end].trim(), ctx));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

fn resolve(expr: &str, ctx: &Context) -> String {
    let expr = expr.strip_prefix('$').map(|e| e.to_string()).unwrap_or_else(|| expr.trim_start_matches('.').to_string());
    let opt = |v: Option<f64>| v.map(number).unwrap_or_default();
    match expr.as_str() {
        "value" => opt(ctx.value),
        "threshold" => opt(ctx.threshold),
        "severity" => ctx.severity.to_string(),
        e => match (e.strip_prefix("labels."), e.strip_prefix("forecast.")) {
            (Some(name), _) => ctx.labels.get(name).cloned().unwrap_or_default(),
            (_, Some(name)) => ctx.forecast.and_then(|f| f.field(name)).unwrap_or_default(),
            _ => String::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labels_value_and_unknowns() {
        let labels: Labels = [("client".to_string(), "10.0.0.7".to_string()), ("pid".into(), "42".into())].into();
        let ctx = Context { labels: &labels, value: Some(25.0), threshold: Some(20.0), severity: "critical", forecast: None };
        assert_eq!(
            render("client {{ .labels.client }} holds {{ .value }} (quota {{$value}}/{{ .threshold }}) on pid {{ $labels.pid }}{{ .nope }}", &ctx),
            "client 10.0.0.7 holds 25 (quota 25/20) on pid 42"
        );
        let ctx = Context { labels: &labels, value: Some(0.91234), threshold: None, severity: "warning", forecast: None };
        assert_eq!(
            render("{{ .value }} {{ .severity }} {{ .threshold }}| {{ unterminated", &ctx),
            "0.912 warning | {{ unterminated"
        );
        assert_eq!(number(1.5), "1.5");
        let f = Forecast {
            eta_seconds: Some(45.0),
            usage_ratio: 0.8,
            trigger: Some(crate::predict::Trigger::Forecast),
            ..Default::default()
        };
        let ctx = Context { labels: &labels, value: Some(1.0), threshold: Some(1.0), severity: "critical", forecast: Some(&f) };
        assert_eq!(
            render("{{ .forecast.eta }} {{ .forecast.usage }} [{{ .forecast.trigger }}]{{ .forecast.nope }}", &ctx),
            "45 s 80% [forecast]"
        );
    }
}
