//! The Linux capabilities pooltrace needs, each with the call that needs it, and the ones it
//! has. They are checked before anything is loaded, so that a missing one fails in one line
//! that names it and its call, not in a bare EPERM or EACCES from deep inside a load or an
//! attach. What each call needs was measured on Linux 6.18 (README, "Capabilities").

use crate::error::{Error, Result};

/// One capability and the call pooltrace makes with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    /// Its number (`linux/capability.h`).
    number: u32,
    pub name: &'static str,
    /// The call that needs it, as the error says.
    pub call: &'static str,
}

const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_SYS_ADMIN: u32 = 21;

pub const BPF: Capability = Capability {
    number: 39,
    name: "CAP_BPF",
    call: "bpf(BPF_MAP_CREATE) and bpf(BPF_PROG_LOAD), which load its eBPF maps and programs",
};
pub const PERFMON: Capability = Capability {
    number: 38,
    name: "CAP_PERFMON",
    call: "bpf(BPF_PROG_LOAD) of uprobe programs that read the traced process's memory",
};
pub const SYS_PTRACE: Capability = Capability {
    number: 19,
    name: "CAP_SYS_PTRACE",
    call: "readlink and open of /proc/PID/exe and /proc/PID/maps of a process of another \
           user, or with capabilities pooltrace lacks",
};
pub const DAC_READ_SEARCH: Capability = Capability {
    number: 2,
    name: "CAP_DAC_READ_SEARCH",
    call: "open of /proc/PID/mem (mode 0600) of another user's process, which tells its exec",
};
pub const SYS_ADMIN: Capability = Capability {
    number: CAP_SYS_ADMIN,
    name: "CAP_SYS_ADMIN",
    call: "perf_event_open(2) of a uprobe: this kernel has no uprobe-multi links pooltrace can \
           use, so each probe site needs a link of its own",
};

/// What `report`, `run` and `stream` need before anything else: the load. The target's
/// files are checked as they are opened.
pub const TRACE: [Capability; 2] = [BPF, PERFMON];
/// What the agent needs: it traces processes of other users, in other containers.
pub const AGENT: [Capability; 4] = [BPF, PERFMON, SYS_PTRACE, DAC_READ_SEARCH];

/// The process's effective capabilities.
#[derive(Clone, Copy, Debug)]
pub struct Effective(u64);

impl Effective {
    /// Read from `/proc/self/status`; none when it cannot be read.
    pub fn read() -> Self {
        let effective = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
                u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
            })
            .unwrap_or(0);
        Self(effective)
    }

    /// Whether the kernel grants what `capability` grants: CAP_SYS_ADMIN stands for CAP_BPF
    /// and CAP_PERFMON (`bpf_capable`, `perfmon_capable`), and CAP_DAC_OVERRIDE for
    /// CAP_DAC_READ_SEARCH's reads.
    pub fn has(self, capability: Capability) -> bool {
        let bit = |n: u32| self.0 & (1 << n) != 0;
        bit(capability.number)
            || match capability {
                BPF | PERFMON => bit(CAP_SYS_ADMIN),
                DAC_READ_SEARCH => bit(CAP_DAC_OVERRIDE),
                _ => false,
            }
    }

    /// The first of `needed` that is missing, as the error that names it and its call.
    pub fn require(self, needed: &[Capability]) -> Result<()> {
        match needed.iter().find(|&&capability| !self.has(capability)) {
            Some(missing) => Err(Error::Privilege {
                capability: missing.name,
                call: missing.call,
            }),
            None => Ok(()),
        }
    }

    /// The names of those of `capabilities` it has, in their order.
    pub fn names(self, capabilities: &[Capability]) -> Vec<&'static str> {
        (capabilities.iter())
            .filter(|&&capability| self.has(capability))
            .map(|capability| capability.name)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(numbers: &[u32]) -> Effective {
        Effective(numbers.iter().fold(0, |bits, n| bits | 1 << n))
    }

    #[test]
    fn sys_admin_stands_for_bpf_and_perfmon_but_not_for_ptrace() {
        let admin = with(&[CAP_SYS_ADMIN]);
        assert!(admin.has(BPF) && admin.has(PERFMON) && admin.has(SYS_ADMIN));
        assert!(!admin.has(SYS_PTRACE));
        assert!(with(&[CAP_DAC_OVERRIDE]).has(DAC_READ_SEARCH));
    }

    #[test]
    fn the_first_missing_capability_is_named_with_its_call() {
        let effective = with(&[39, 38, 19, 5]);
        assert_eq!(
            effective.names(&AGENT),
            ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE"]
        );
        let error = effective.require(&AGENT).unwrap_err().to_string();
        assert_eq!(
            error,
            format!(
                "pooltrace needs CAP_DAC_READ_SEARCH for {}; run it as root, or grant it \
                 the capability",
                DAC_READ_SEARCH.call
            )
        );
        assert!(with(&[39, 38, 19, 2]).require(&AGENT).is_ok());
    }
}
