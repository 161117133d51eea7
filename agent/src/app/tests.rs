//! Tests of the root config that span sections: the shipped config file and the error text of
//! a section's validation as the root reports it.

use std::path::Path;

use crate::app::config::Config;

fn parse(toml: &str) -> Result<Config, String> {
    Config::parse(toml, Path::new("t.toml")).map_err(|e| e.to_string())
}

#[test]
fn validation_errors_never_echo_a_secret_url() {
    let e =
        parse("[[notify.channels]]\nname = \"s\"\ntype = \"slack\"\nurl = \"hooks.slack.com/services/T00/B00/SECRETTOKEN\"\n")
            .unwrap_err();
    assert!(!e.contains("SECRETTOKEN"), "{e}");
}

/// The commented examples in config/wsguard.toml stay valid, and every one ships in dry run.
#[test]
fn shipped_remediation_examples_parse_when_uncommented() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/wsguard.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut seen = false;
    let uncommented: String = text
        .lines()
        .map(|l| {
            seen |= l == "[remediation]";
            let example = l.strip_prefix("# ").filter(|r| {
                seen && (r.starts_with("[[remediation.actions]]")
                    || r.split_once(" = ").is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_')))
            });
            format!("{}\n", example.unwrap_or(l))
        })
        .collect();
    let cfg = Config::parse(&uncommented, &path).unwrap();
    let r = &cfg.remediation;
    assert_eq!(r.actions.len(), 8);
    assert!(r.actions.iter().all(|a| a.dry_run), "every example ships in dry run");
    let on: Vec<&str> = r.actions.iter().flat_map(|a| a.on.iter().map(String::as_str)).collect();
    for crisis in ["ClientConnectionQuota", "FdUsageHigh", "ConnectionHealthLow", "CrisisProbabilityHigh"] {
        assert!(on.contains(&crisis), "an example for {crisis}");
    }
    let idle2m = r.actions.iter().find(|a| a.on == ["CrisisProbabilityHigh"] && a.select.is_some()).unwrap();
    assert_eq!(idle2m.select.as_ref().unwrap().idle_for, std::time::Duration::from_secs(120));
    // As shipped (examples commented out): no action.
    assert!(Config::parse(&text, &path).unwrap().remediation.actions.is_empty());
}
