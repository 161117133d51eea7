//! The table printed after `--compare` / `--only` runs (docs are left alone then).

use super::report::{fmt, tracked_estimate};
use serde_json::{json, Value};
use std::fmt::Write;

/// `--compare` / `--only`: the figures of this build (`on`) next to the other one (`base`).
pub fn compare_table(out: &Value) -> String {
    let mut s = String::from("| Figure | on (this build) | base (--compare) |\n|---|---|---|\n");
    let mut row = |name: &str, on: &Value, base: &Value, d: usize| {
        let _ = writeln!(s, "| {name} | {} | {} |", fmt(on, d), fmt(base, d));
    };
    let fr = &out["fixed_rate"]["medians"];
    for (k, d) in [
        ("server_cpu_us_per_msg", 2),
        ("probe_enter_ns_per_run", 1),
        ("probe_exit_ns_per_run", 1),
        ("probe_ns_per_msg", 0),
        ("p50_ms", 2),
    ] {
        row(&format!("fixed rate: {k}"), &fr["on"][k], &fr["base"][k], d);
    }
    row(
        "fixed rate: tracked sys_exit ns per server read/write (estimated)",
        &json!(tracked_estimate(out, "on")),
        &json!(tracked_estimate(out, "base")),
        1,
    );
    if !fr["off"].is_null() {
        row("fixed rate: server_cpu_us_per_msg, agent off", &fr["off"]["server_cpu_us_per_msg"], &Value::Null, 2);
    }
    let sat = &out["saturated"]["medians"];
    row("saturated msg/s", &sat["on"], &sat["base"], 0);
    let pc = &out["probe_cost"]["medians"];
    for k in ["enter_ns_per_run", "exit_ns_per_run", "dd_s"] {
        row(&format!("untracked (dd): {k}"), &pc["wsguard"][k], &pc["wsguard_base"][k], 1);
    }
    row("untracked (dd): floor enter/exit", &pc["empty_raw_tp"]["enter_ns_per_run"], &pc["empty_raw_tp"]["exit_ns_per_run"], 1);
    let pm = &out["probe_micro"];
    row("micro: ns per round (off)", &pm["medians"]["off"], &Value::Null, 1);
    row("micro: ns per round", &pm["medians"]["on"], &pm["medians"]["base"], 1);
    row(
        "micro: added ns per tracked syscall",
        &pm["added_ns_per_tracked_syscall"]["on"],
        &pm["added_ns_per_tracked_syscall"]["base"],
        1,
    );
    let (on, base) = (&pm["variants"]["on"], &pm["variants"]["base"]);
    for k in ["untracked", "tracked"] {
        row(
            &format!("micro: CPU ns added per {k} syscall"),
            &on["added_ns_per_syscall_cpu"][k],
            &base["added_ns_per_syscall_cpu"][k],
            1,
        );
        row(&format!("micro: bpf_stats ns per {k} run"), &on["bpf_stats_ns_per_run"][k], &base["bpf_stats_ns_per_run"][k], 1);
    }
    let ac = &out["agent_cost"];
    for r in ac["idle"].as_array().into_iter().flatten() {
        let n = r["connections"].as_u64().unwrap_or(0);
        let b = ac["base"]["idle"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["connections"].as_u64() == Some(n)).cloned())
            .unwrap_or(Value::Null);
        for (k, d) in [("agent_cpu_pct_of_core", 2), ("agent_rss_mib", 1), ("snapshot_ms", 1), ("snapshot_cpu_ms", 1)] {
            row(&format!("{n} idle: {k}"), &r[k], &b[k], d);
        }
    }
    for (k, d) in [("agent_cpu_pct_of_core", 2), ("reached_frames_per_s", 0)] {
        row(&format!("frames: {k}"), &ac["frames"][k], &ac["base"]["frames"][k], d);
    }
    let sse = &out["sse"];
    if !sse.is_null() {
        row("sse: server CPU µs per event, off", &sse["median_server_cpu_us_per_event"]["off"], &Value::Null, 3);
        row("sse: server CPU µs per event, on", &sse["median_server_cpu_us_per_event"]["on"], &Value::Null, 3);
        row("sse: probe ns per run", &sse["median_probe_ns_per_run"], &Value::Null, 0);
        row("sse: probe ns per event", &sse["median_probe_ns_per_event"], &Value::Null, 0);
    }
    s
}
