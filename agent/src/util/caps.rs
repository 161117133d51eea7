//! Capability numbers and the capability sets of a process or thread, read from its
//! `/proc/.../status`: what `wsguard run` checks before it starts, what `wsguard doctor`
//! reports and what `app/privs.rs` verifies on every thread after it dropped capabilities
//! (the drop itself goes through the `caps` crate). The one parser of those lines.

pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_SYS_RESOURCE: u32 = 24;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// The `CapEff:` mask of a `/proc/<pid>/status` text.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(mask)
}

fn mask(hex: &str) -> Option<u64> {
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// A thread's capability sets and `no_new_privs`, from its `status` file.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ThreadCaps {
    pub inheritable: u64,
    pub permitted: u64,
    pub effective: u64,
    pub bounding: u64,
    pub ambient: u64,
    pub no_new_privs: bool,
}

impl ThreadCaps {
    /// Parse the `Cap*:` and `NoNewPrivs:` lines of a `/proc/.../status` file.
    pub fn parse(status: &str) -> Option<ThreadCaps> {
        let mut t = ThreadCaps::default();
        let mut seen = 0;
        for line in status.lines() {
            let Some((k, v)) = line.split_once(':') else { continue };
            match k {
                "CapInh" => t.inheritable = mask(v)?,
                "CapPrm" => t.permitted = mask(v)?,
                "CapEff" => t.effective = mask(v)?,
                "CapBnd" => t.bounding = mask(v)?,
                "CapAmb" => t.ambient = mask(v)?,
                "NoNewPrivs" => t.no_new_privs = v.trim() == "1",
                _ => continue,
            }
            seen += 1;
        }
        (seen == 6).then_some(t)
    }
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
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
    }

    #[test]
    fn thread_sets() {
        let s = "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t00000000000000c0\nCapEff:\t00000000000000c0\n\
                 CapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t0\n";
        let t = ThreadCaps::parse(s).unwrap();
        assert_eq!((t.permitted, t.effective, t.bounding, t.no_new_privs), (0xc0, 0xc0, 0x1ff_ffff_ffff, true));
        assert_eq!(parse_cap_eff(s), Some(0xc0));
        assert!(ThreadCaps::parse("Name:\tx\n").is_none());
    }
}
