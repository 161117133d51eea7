//! Capability numbers and the effective set of this process, read from `/proc/self/status`:
//! what `wsguard run` checks before it starts and what `wsguard doctor` reports. (Dropping
//! capabilities after the attach is `app/privs.rs`, over the `caps` crate.)

pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_SYS_RESOURCE: u32 = 24;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// The `CapEff:` mask of a `/proc/<pid>/status` text.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

pub fn has_cap(mask: u64, cap: u32) -> bool {
    cap < 64 && mask & (1u64 << cap) != 0
}

/// Enough to load and attach the probe: CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON.
pub fn can_load_probe(mask: u64) -> bool {
    has_cap(mask, CAP_SYS_ADMIN) || (has_cap(mask, CAP_BPF) && has_cap(mask, CAP_PERFMON))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_set() {
        let status = "Name:\tx\nCapPrm:\t0000000000000000\nCapEff:\t000000c000200000\n";
        let caps = parse_cap_eff(status).unwrap();
        assert!(has_cap(caps, CAP_BPF) && has_cap(caps, CAP_PERFMON) && has_cap(caps, CAP_SYS_ADMIN));
        assert!(!has_cap(caps, CAP_SYS_PTRACE) && !has_cap(caps, 64));
        assert!(can_load_probe(caps) && can_load_probe(1 << CAP_SYS_ADMIN) && !can_load_probe(1 << CAP_BPF));
        assert_eq!(parse_cap_eff("Name:\tx\n"), None);
    }
}
