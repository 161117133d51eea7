//! The bench targets checked against the measurements (the document is markdown.rs).

use super::stats::pct;
use serde_json::{json, Value};
use std::fmt::Write;

pub(super) fn f(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn target(name: &str, limit: &str, measured: Option<f64>, shown: String, met: Option<bool>, by: String, why: &str) -> Value {
    json!({
        "target": name, "limit": limit, "measured": measured, "shown": shown,
        "met": met, "by": by, "why_missed": if met == Some(false) { why } else { "" },
    })
}

const WHY_CPU: &str = "Every syscall of a watched process (node's epoll_wait, futex, ...) runs the sys_exit program past the watched-tgid bitmap to one pt_regs read; each read and write on a tracked connection then does a (tgid, fd) hash lookup in WSG_CONNS, a bpf_loop walk that copies each frame header from user memory, a clock read, per-connection counters and one per-process (per-CPU) record lookup, plus a histogram lookup when a response-latency sample closes. One echoed message is one read and one write of the server.";
const WHY_CPU_SOCKET: &str = "Socket mode: each read and write of the server on a followed connection runs a tp_btf program that finds the connection in the socket's storage, reads the syscall's registers (bpf_task_pt_regs), walks the frames with bpf_loop copying each header from user memory, reads the clock, updates the connection's counters and looks up the per-process (per-CPU) record, plus a histogram lookup when a response-latency sample closes. One echoed message is one read and one write of the server.";
const WHY_TRACKED: &str = "Memory latency, not instructions: between two messages on one connection the server touches thousands of others and its own heap, so that connection's state is cold again. Ablations during development (this machine, 2026-11-22, busy; probe builds cut short at each stage, same load, estimated per server read/write): up to the (tgid, fd) bitmap ~115-140 ns per server read/write; adding the WSG_CONNS hash lookup alone +240 ns (perf: two stalls in lookup_nulls_elem_raw, the bucket head and the element; a smaller table did not remove them); the frame walk, clock, counters and per-process and histogram lookups another ~250 ns. The state is laid out so a read touches the key's cache line and one more (a write two), and the per-process counters are per CPU without atomics; getting below ~3 cache misses per syscall would need per-socket storage, which raw tracepoints cannot reach (no socket pointer without reading kernel structs at fixed offsets). bpf_stats's own clock reads are included (~37 ns: the empty-program floor).";
const WHY_UNTRACKED: &str = "For an unwatched process the programs do very little (sys_enter: compare the syscall number; sys_exit: bpf_get_current_pid_tgid and one array lookup in the watched bitmap, then return before any stack is set up), so what remains is the fixed cost of a BPF program on a raw tracepoint plus bpf_stats's clock reads; compare with the empty-program floor in the probe-cost table.";
const WHY_TRACKED_SOCKET: &str = "A tracked socket read or write runs the tp_btf program: one bpf_sk_storage_get (the socket's own state, no hash walk), bpf_get_current_pid_tgid (the process it counts for), bpf_get_current_task_btf + bpf_task_pt_regs and four plain BTF-checked loads for the syscall's number and buffer, a clock read, one bpf_probe_read_user of up to 16 bytes per frame header in an inlined bpf_loop, the connection's counters and a lookup of the per-process (per-CPU) record, plus the process's latency histogram on a response. With 20 connections (all state in cache) it measured about as much as with 2000, so the helper calls, not cache misses, are most of it: on this AMD VM every kernel call and return goes through the SRSO return thunk, and in a perf profile the 16-byte user read (copy_from_user_nofault and its usercopy checks) was the largest single part. bpf_stats's own clock reads are included.";
const WHY_UNTRACKED_SOCKET: &str = "For a socket without followed state the program is the tp_btf trampoline, the ret/MSG_PEEK checks and one bpf_sk_storage_get that finds the socket's storage list empty. Any design that keeps state in socket storage on these hooks pays the last two floors in the micro table (an empty tp_btf program on both hooks, and one that does only the bpf_sk_storage_get): on this AMD VM every helper call and return goes through the SRSO return thunk, and the trampoline itself is a call and a return. What wsguard adds above the sk_storage_get floor is its own.";
const WHY_AGENT: &str = "Per interval the agent reads the small maps, reads the connection states (syscall mode: WSG_CONNS in batches of 1024, BPF_MAP_LOOKUP_BATCH; socket mode: one read of the iter/tcp iterator over the host's TCP sockets), lists each process's fd directory once (resolving only fds it has not seen), dumps each network namespace's TCP sockets once over NETLINK_SOCK_DIAG and builds one view per connection; the kernel's sock_diag walk over all sockets of the host and the fd listing are the largest parts.";
const WHY_RSS: &str = "The per-connection views (about 300 bytes each with their peer and client-key strings) are built every interval while the API still serves the previous ones; large buffers are mmapped and returned to the OS when dropped (fixed 64 KiB malloc mmap threshold), so the RSS holds about one generation plus a transient second.";
const WHY_SNAP: &str = "Per-connection work per snapshot (one batched map read, one fd listing, one socket dump, one view per connection) is linear; a slope above 1 means something per connection is worse than O(1).";

/// WHY_CPU with this run's numbers: how much CPU per message was added, how much of it the
/// probe's own runs account for, and what a counting-only bpftrace script cost next to it.
fn why_cpu(out: &Value) -> String {
    let m = &out["fixed_rate"]["medians"];
    let (on, off) = (f(&m["on"]["server_cpu_us_per_msg"]), f(&m["off"]["server_cpu_us_per_msg"]));
    let mut s = if out["on_mode"] == "socket" { WHY_CPU_SOCKET } else { WHY_CPU }.to_string();
    if let (Some(on), Some(off)) = (on, off) {
        let _ = write!(s, " Here the server spent {:.2} µs more per message with the agent on", on - off);
        if let Some(probe) = f(&m["on"]["probe_ns_per_msg"]) {
            let _ = write!(s, "; the probe's runs on the whole host (bpf_stats: the server's, and the load generator's cheap untracked ones) came to {:.2} µs per echoed message, the rest being most likely the cache lines the probe's state displaces from the server's own working set, plus noise", probe / 1000.0);
        }
        if let Some(bt) = f(&out["fixed_rate"]["ratios_vs_off"]["bpftrace"]["server_cpu_us_per_msg"]) {
            let _ = write!(s, "; a bpftrace script that only counts the server's 11 syscall exits cost {:+.1}%", pct(bt));
        }
        s.push('.');
    }
    if out["on_mode"] == "socket" {
        return s;
    }
    s.push_str(" The way below this cost is a different hook, not a faster program: the `tp_btf` tracepoints `sock:sock_recv_length` and `sock:sock_send_length` (kernel 6.3+) fire only on socket I/O and carry the socket, so connection state could live in socket-local storage (no hash lookup, no run on the server's other syscalls); userspace would then read it through a BPF iterator instead of a batched map read. That is a probe redesign, not done yet.");
    s
}

/// ns per hot-program run on the server's own read/write syscalls, estimated from the
/// fixed-rate rounds: bpf_stats only gives a total per program over every process on the host,
/// so the runs of everything else (the load generator, the rest of the machine) are taken out at
/// the untracked cost measured in the probe-cost scenario: `(ns - (runs - n) * untracked_ns) / n`,
/// n = the server's read + write syscalls in the window (/proc/<pid>/io). Syscall mode: the
/// sys_exit program only (the server's other syscalls, epoll_wait, ..., are charged at the
/// untracked cost, so this leans high by a few ns). Socket mode: sock_recv + sock_send runs
/// (only socket I/O runs them). Other WebSocket servers busy on the same host would make it
/// lean high.
pub fn tracked_estimate(out: &Value, variant: &str) -> Option<f64> {
    let socket = variant == "on" && out["on_mode"] == "socket";
    let pc = &out["probe_cost"]["medians"];
    let untracked = match variant {
        "base" => pc["wsguard_base"]["exit_ns_per_run"].as_f64()?,
        "syscall" => pc["wsguard_syscall"]["exit_ns_per_run"].as_f64()?,
        _ if socket => pc["wsguard"]["socket_io"]["untracked_ns_per_run"].as_f64()?,
        _ => pc["wsguard"]["exit_ns_per_run"].as_f64()?,
    };
    let per_run: Vec<f64> = out["fixed_rate"]["runs"]
        .as_array()?
        .iter()
        .filter(|r| r["variant"] == variant)
        .filter_map(|r| {
            let p = &r["probe_stats"];
            let (mut ns, mut runs) = (p["exit_ns"].as_f64()?, p["exit_runs"].as_f64()?);
            if socket {
                ns += p["enter_ns"].as_f64()?;
                runs += p["enter_runs"].as_f64()?;
            }
            let n = p["server_data_syscalls"].as_f64()?;
            (n > 0.0 && runs >= n).then(|| (ns - (runs - n) * untracked) / n)
        })
        .collect();
    super::stats::median(&per_run)
}

pub fn targets(out: &Value) -> Value {
    let fr = &out["fixed_rate"];
    let mut t = Vec::new();
    let cpu = f(&fr["ratios_vs_off"]["on"]["server_cpu_us_per_msg"]);
    let why_cpu = why_cpu(out);
    t.push(target(
        "Server CPU per message, fixed rate, agent on vs off",
        "≤ +3%",
        cpu,
        cpu.map(|r| format!("{:+.1}%", pct(r))).unwrap_or("n/a".into()),
        cpu.map(|r| r <= 1.03),
        cpu.map(|r| format!("{:+.1} points vs the limit", pct(r) - 3.0)).unwrap_or_default(),
        &why_cpu,
    ));
    let sat = f(&out["saturated"]["ratio_on_off"]);
    t.push(target(
        "Saturated throughput, agent on vs off",
        "≥ −3%",
        sat,
        sat.map(|r| format!("{:+.1}%", pct(r))).unwrap_or("n/a".into()),
        sat.map(|r| r >= 0.97),
        sat.map(|r| format!("{:+.1} points vs the limit", pct(r) + 3.0)).unwrap_or_default(),
        &why_cpu,
    ));
    let p50 = f(&fr["ratios_vs_off"]["on"]["p50_ms"]);
    t.push(target(
        "p50 latency, agent on vs off",
        "≤ +5%",
        p50,
        p50.map(|r| format!("{:+.1}%", pct(r))).unwrap_or("n/a".into()),
        p50.map(|r| r <= 1.05),
        p50.map(|r| format!("{:+.1} points vs the limit", pct(r) - 5.0)).unwrap_or_default(),
        "Latency carries the probe's in-kernel time on each of the server's syscalls (see CPU), and on 2 shared cores any extra CPU queues behind the load generator and other work.",
    ));
    let p99 = f(&fr["ratios_vs_off"]["on"]["p99_ms"]);
    t.push(target(
        "p99 latency, agent on vs off",
        "reported",
        p99,
        p99.map(|r| format!("{:+.1}%", pct(r))).unwrap_or("n/a".into()),
        None,
        "noisy on this machine".into(),
        "",
    ));
    let socket = out["on_mode"] == "socket";
    let below_bt = match (cpu, f(&fr["ratios_vs_off"]["bpftrace"]["server_cpu_us_per_msg"])) {
        (Some(on), Some(bt)) => Some((on, bt)),
        _ => None,
    };
    t.push(target(
        "Server CPU per message, agent on below the bpftrace counter",
        "on < bpftrace",
        below_bt.map(|(on, _)| on),
        below_bt.map(|(on, bt)| format!("on {:+.1}%, bpftrace {:+.1}%", pct(on), pct(bt))).unwrap_or("n/a".into()),
        below_bt.map(|(on, bt)| on < bt),
        below_bt.map(|(on, bt)| format!("{:+.1} points", pct(on) - pct(bt))).unwrap_or_default(),
        &why_cpu,
    ));
    let sys_cpu = f(&fr["ratios_vs_off"]["syscall"]["server_cpu_us_per_msg"]);
    t.push(target(
        "Server CPU per message, syscall (fallback) mode vs off",
        "reported",
        sys_cpu,
        sys_cpu.map(|r| format!("{:+.1}%", pct(r))).unwrap_or("n/a".into()),
        None,
        String::new(),
        "",
    ));
    let pc = &out["probe_cost"]["medians"];
    let sio = &pc["wsguard"]["socket_io"];
    let (label, tracked) = if socket {
        ("Tracked socket I/O per run (socket mode: sock_recv/sock_send on the server's reads and writes, isolated, bpf_stats), median", f(&sio["tracked_ns_per_run"]))
    } else {
        ("Tracked program run (sys_exit on the server's reads and writes, estimated), median", tracked_estimate(out, "on"))
    };
    t.push(target(
        label,
        "≤ 150 ns",
        tracked,
        tracked.map(|v| format!("{v:.0} ns")).unwrap_or("n/a".into()),
        tracked.map(|v| v <= 150.0),
        tracked.map(|v| format!("{:+.0} ns", v - 150.0)).unwrap_or_default(),
        if socket { WHY_TRACKED_SOCKET } else { WHY_TRACKED },
    ));
    let est = tracked_estimate(out, "on");
    if socket {
        let pm = &out["probe_micro"]["variants"]["on"];
        let (c, w) = (f(&pm["added_ns_per_syscall_cpu"]["tracked"]), f(&pm["added_ns_per_syscall_wall"]["tracked"]));
        t.push(target(
            "Tracked socket I/O, CPU time added per server read/write without bpf_stats (micro), median",
            "reported (the target above is judged on bpf_stats, as the issue states)",
            c,
            c.map(|v| format!("{v:.0} ns (wall {})", w.map(|w| format!("{w:.0} ns")).unwrap_or("n/a".into())))
                .unwrap_or("n/a".into()),
            None,
            String::new(),
            "",
        ));
    }
    if socket {
        t.push(target(
            "Tracked socket I/O per run under the fixed-rate load (estimated from the whole host's runs), median",
            "reported",
            est,
            est.map(|v| format!("{v:.0} ns")).unwrap_or("n/a".into()),
            None,
            "the server's reads and writes amid the load generator's untracked ones".into(),
            "",
        ));
    }
    let sys_tracked = f(&pc["wsguard_syscall"]["socket_io"]["tracked_ns_per_run"]);
    t.push(target(
        "Tracked syscall, syscall (fallback) mode: sys_exit on the server's reads and writes, isolated",
        "reported",
        sys_tracked,
        sys_tracked.map(|v| format!("{v:.0} ns")).unwrap_or("n/a".into()),
        None,
        String::new(),
        "",
    ));
    if socket {
        // Judged without bpf_stats (the issue names bpf_stats for the tracked figure only, and
        // its two clock reads per run are most of an untracked run): the CPU time one untracked
        // socket syscall gains with the probe attached, from the micro scenario (the thread's
        // CPU time includes the probe's in-kernel time and, unlike wall time, not the time the
        // thread waited for a CPU on a shared machine; wall time is shown beside it). The
        // bpf_stats figure is used only when the micro scenario did not run. A figure below zero
        // is noise (the no-probe runs were slower) and is not judged.
        let pm = &out["probe_micro"]["variants"];
        let cpu = f(&pm["on"]["added_ns_per_syscall_cpu"]["untracked"]);
        let wall = f(&pm["on"]["added_ns_per_syscall_wall"]["untracked"]);
        let stats = f(&sio["untracked_ns_per_run"]).or(f(&pm["on"]["bpf_stats_ns_per_run"]["untracked"]));
        let u = cpu.or(stats);
        let floor = |v: &str| f(&pm[v]["added_ns_per_syscall_cpu"]["untracked"]);
        let floor_stats = |v: &str| f(&pm[v]["bpf_stats_ns_per_run"]["floor"]);
        let n = |v: Option<f64>| v.map(|v| format!("{v:.0} ns")).unwrap_or("n/a".into());
        t.push(target(
            "Untracked socket I/O (socket mode: plain TCP pairs), CPU time added per syscall without bpf_stats (micro), median",
            "≤ 40 ns",
            u,
            match cpu {
                Some(c) => format!(
                    "{c:.0} ns (wall {}; bpf_stats {} per run; floors, CPU without / bpf_stats: empty tp_btf {} / {}, tp_btf + one sk_storage_get {} / {})",
                    n(wall),
                    n(stats),
                    n(floor("empty_tp_btf")),
                    n(floor_stats("empty_tp_btf")),
                    n(floor("sk_storage_get_tp_btf")),
                    n(floor_stats("sk_storage_get_tp_btf")),
                ),
                None => format!("{} per run (bpf_stats; no micro run)", n(stats)),
            },
            u.filter(|v| *v >= 0.0).map(|v| v <= 40.0),
            u.map(|v| if v < 0.0 { "below the no-probe runs: noise, not judged".into() } else { format!("{:+.0} ns", v - 40.0) })
                .unwrap_or_default(),
            WHY_UNTRACKED_SOCKET,
        ));
        let runs = f(&sio["wsg_runs_during_file_syscalls"]);
        let n = f(&sio["file_syscalls"]).unwrap_or(0.0);
        let dd = f(&pc["wsguard"]["wsg_runs_during_dd"]);
        t.push(target(
            "A watched process's non-socket syscalls run no wsguard program (runs of all wsg_* programs during its file I/O)",
            "0 (any runs are other processes' socket I/O meanwhile)",
            runs,
            runs.map(|v| {
                format!(
                    "{v:.0} runs during {n:.0} syscalls (dd: {} during {})",
                    dd.map(|d| format!("{d:.0}")).unwrap_or("n/a".into()),
                    pc["wsguard"]["dd_syscalls"]
                )
            })
            .unwrap_or("n/a".into()),
            runs.map(|v| v <= n / 1000.0),
            runs.map(|v| format!("{:.4} runs per syscall", v / n.max(1.0))).unwrap_or_default(),
            "Some program ran for each file syscall: the socket mode's hooks are not the only ones attached.",
        ));
    }
    let all_runs = f(&fr["medians"]["on"]["probe_exit_ns_per_run"]);
    t.push(target(
        if socket {
            "sock_send run under WebSocket load, all processes' runs averaged, median"
        } else {
            "sys_exit run under WebSocket load, all processes' runs averaged, median"
        },
        "reported",
        all_runs,
        all_runs.map(|v| format!("{v:.0} ns")).unwrap_or("n/a".into()),
        None,
        "mixes tracked and untracked runs of every process on the host".into(),
        "",
    ));
    let pm = &pc[if socket { "wsguard_syscall" } else { "wsguard" }];
    let floor = &pc["empty_raw_tp"];
    let floor_ns = match (f(&floor["enter_ns_per_run"]), f(&floor["exit_ns_per_run"])) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let why_untracked = format!(
        "{WHY_UNTRACKED} Here the empty program alone measured {} ns per run, so the 40 ns limit leaves almost nothing above the floor as long as it is measured with bpf_stats on.",
        floor_ns.map(|v| format!("{v:.0}")).unwrap_or("n/a".into())
    );
    let untracked = match (f(&pm["enter_ns_per_run"]), f(&pm["exit_ns_per_run"])) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    t.push(target(
        if socket {
            "Untracked process, syscall (fallback) mode, per program run (worse of sys_enter/sys_exit)"
        } else {
            "Untracked process, per program run (worse of sys_enter/sys_exit)"
        },
        if socket { "reported" } else { "≤ 40 ns" },
        untracked,
        untracked.map(|v| format!("{v:.0} ns")).unwrap_or("n/a".into()),
        if socket { None } else { untracked.map(|v| v <= 40.0) },
        untracked
            .map(|v| format!("{:+.0} ns ({:+.0} ns above the empty-program floor)", v - 40.0, v - floor_ns.unwrap_or(f64::NAN)))
            .unwrap_or_default(),
        &why_untracked,
    ));
    let idle = out["agent_cost"]["idle"].as_array().cloned().unwrap_or_default();
    let at = |n: u64, k: &str| idle.iter().find(|r| r["connections"].as_u64() == Some(n)).and_then(|r| r[k].as_f64());
    let a10 = at(10_000, "agent_cpu_pct_of_core");
    t.push(target(
        "Agent CPU, 10k idle connections",
        "≤ 2% of a core",
        a10,
        a10.map(|v| format!("{v:.2}%")).unwrap_or("n/a".into()),
        a10.map(|v| v <= 2.0),
        a10.map(|v| format!("{:+.2} points", v - 2.0)).unwrap_or_default(),
        WHY_AGENT,
    ));
    let fr_ = &out["agent_cost"]["frames"];
    let afps = f(&fr_["agent_cpu_pct_of_core"]);
    let reached = f(&fr_["reached_frames_per_s"]).unwrap_or(0.0);
    t.push(target(
        "Agent CPU at 100k frames/s",
        "≤ 10% of a core",
        afps,
        afps.map(|v| format!("{v:.2}% (at {reached:.0} frames/s reached)")).unwrap_or("n/a".into()),
        afps.map(|v| v <= 10.0),
        afps.map(|v| format!("{:+.2} points", v - 10.0)).unwrap_or_default(),
        "No per-frame events reach the agent (counts are in maps; the ring buffer carries only opens, failed handshakes and closes), so its cost at a high frame rate is the snapshot of its connections.",
    ));
    let rss = at(50_000, "agent_rss_mib");
    t.push(target(
        "Agent RSS, 50k connections",
        "≤ 64 MiB",
        rss,
        rss.map(|v| format!("{v:.1} MiB")).unwrap_or("not measured (--quick)".into()),
        rss.map(|v| v <= 64.0),
        rss.map(|v| format!("{:+.1} MiB", v - 64.0)).unwrap_or_default(),
        WHY_RSS,
    ));
    let slope = f(&out["agent_cost"]["snapshot_ms_loglog_slope"]);
    t.push(target(
        "Snapshot build time vs connections",
        "no worse than linear (log-log slope ≤ 1.15)",
        slope,
        slope.map(|v| format!("slope {v:.2}")).unwrap_or("n/a".into()),
        slope.map(|v| v <= 1.15),
        slope.map(|v| format!("{:+.2}", v - 1.15)).unwrap_or_default(),
        WHY_SNAP,
    ));
    Value::Array(t)
}

pub(super) fn fmt(v: &Value, d: usize) -> String {
    match v.as_f64() {
        Some(x) => format!("{x:.d$}"),
        None => "n/a".into(),
    }
}

pub(super) fn ratio_cell(v: &Value) -> String {
    v.as_f64().map(|r| format!("{:+.1}%", pct(r))).unwrap_or("—".into())
}

pub fn targets_table(out: &Value) -> String {
    let mut s = String::new();
    s.push_str("| Target | Limit | Measured | Met | By how much |\n|---|---|---|---|---|\n");
    for t in out["targets"].as_array().into_iter().flatten() {
        let met = match t["met"].as_bool() {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "—",
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            t["target"].as_str().unwrap_or(""),
            t["limit"].as_str().unwrap_or(""),
            t["shown"].as_str().unwrap_or(""),
            met,
            t["by"].as_str().unwrap_or("")
        );
    }
    s
}
