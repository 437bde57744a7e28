//! What both benchmark binaries share: the machine facts a report states (CPU, pinning, load, other processes'
//! CPU time), random payloads, and percentiles. Included with `mod common;` by `secure_channel.rs` and `sessions.rs`.
#![allow(dead_code)] // each benchmark uses a subset

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::process::{Command, Stdio};
use std::time::Duration;

pub fn env_flag(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

pub fn taskset_available() -> bool {
    Command::new("taskset").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// The CPUs this process may run on, from /proc/self/status.
pub fn cpus_allowed() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:").map(|v| v.trim().to_owned())))
        .unwrap_or_else(|| "?".into())
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// CPUs of the machine (not of this process, which `taskset` may have narrowed).
pub fn cpus_online() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().filter(|l| l.starts_with("processor")).count())
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Busy and total jiffies of the whole machine (/proc/stat), and the CPU jiffies of this process and its waited-for
/// children (/proc/self/stat: utime, stime, cutime, cstime).
#[derive(Clone, Copy, Default)]
pub struct CpuSnapshot {
    machine_busy: u64,
    machine_total: u64,
    own: u64,
}

impl CpuSnapshot {
    pub fn take() -> CpuSnapshot {
        let mut snap = CpuSnapshot::default();
        if let Some(line) = std::fs::read_to_string("/proc/stat").ok().and_then(|s| s.lines().next().map(str::to_owned))
        {
            let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
            // user nice system idle iowait irq softirq steal (guest time is already in user).
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            snap.machine_total = total;
            snap.machine_busy = total.saturating_sub(idle);
        }
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the parenthesised command name; utime is field 14 overall, i.e. index 11 here.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
            snap.own = f.iter().skip(11).take(4).sum();
        }
        snap
    }

    /// Share of the machine's CPU time, between `self` and `later`, used by processes outside this benchmark.
    pub fn others_share(&self, later: &CpuSnapshot) -> f64 {
        let total = later.machine_total.saturating_sub(self.machine_total).max(1) as f64;
        let busy = later.machine_busy.saturating_sub(self.machine_busy) as f64;
        let own = later.own.saturating_sub(self.own) as f64;
        ((busy - own) / total).max(0.0)
    }
}

pub fn date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

/// `n` bytes that do not compress (a keyed hash of a counter); no RNG dependency needed.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let state = RandomState::new();
    let mut out = Vec::with_capacity(n + 8);
    let mut counter = 0u64;
    while out.len() < n {
        let mut h = state.build_hasher();
        h.write_u64(counter);
        out.extend_from_slice(&h.finish().to_le_bytes());
        counter += 1;
    }
    out.truncate(n);
    out
}

/// The nearest-rank `p`-th percentile (zero for no samples).
pub fn percentile(times: &[Duration], p: usize) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied().unwrap_or_default()
}

/// Milliseconds as a float, for tables.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Why a benchmark runs unpinned (`None` when pinned): `pin_off` names the environment setting that turned pinning off.
pub fn unpinned_reason(pinned: bool, want_pin: bool, cpus: usize, pin_off: &'static str) -> Option<&'static str> {
    if pinned {
        None
    } else if !want_pin {
        Some(pin_off)
    } else if cpus < 2 {
        Some("fewer than 2 CPUs")
    } else {
        Some("taskset not found")
    }
}
