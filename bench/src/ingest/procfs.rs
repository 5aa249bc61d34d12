//! What the ingest benchmark reads from Linux's `/proc`: CPU ticks of processes and of the
//! machine, memory of processes, and which loopback ports listen.
//!
//! Contract: parsing is pure and tested on literal file contents; reading fails naming the
//! file (a process that exited has none).

use std::time::Instant;

use anyhow::{bail, Context, Result};

/// CPU tick counters at one moment: a side's processes, the load generator's, the machine's.
pub struct Snapshot {
    pub at: Instant,
    pub processes: usize,
    /// (utime + stime, stime) of the side's processes.
    pub side: (u64, u64),
    pub load: u64,
    pub busy: u64,
    pub total: u64,
}

impl Snapshot {
    pub fn take(side: &[u32], load: &[u32]) -> Result<Self> {
        let sum = |pids: &[u32]| {
            pids.iter().try_fold((0, 0), |(all, system), &p| {
                let (u, s) = cpu_ticks(p)?;
                Ok::<_, anyhow::Error>((all + u + s, system + s))
            })
        };
        let (busy, total) = machine_ticks()?;
        Ok(Self {
            at: Instant::now(),
            processes: side.len(),
            side: sum(side)?,
            load: sum(load)?.0,
            busy,
            total,
        })
    }
}

/// (utime, stime) of a process (all its threads), in clock ticks.
fn cpu_ticks(pid: u32) -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat (did the process exit?)"))?;
    parse_cpu_ticks(&stat).with_context(|| format!("unexpected /proc/{pid}/stat"))
}

fn parse_cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime, stime))
}

/// Memory of some processes, summed, in KiB.
#[derive(Debug, Default)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub pss_kib: u64,
}

impl Memory {
    /// VmRSS and VmHWM from `/proc/<pid>/status`, Pss from `/proc/<pid>/smaps_rollup`.
    pub fn of(pids: &[u32]) -> Result<Self> {
        let mut sum = Self::default();
        for pid in pids {
            let read = |file: &str| {
                std::fs::read_to_string(format!("/proc/{pid}/{file}"))
                    .with_context(|| format!("read /proc/{pid}/{file} (did the process exit?)"))
            };
            let (status, rollup) = (read("status")?, read("smaps_rollup")?);
            match (
                kib_field(&status, "VmRSS:"),
                kib_field(&status, "VmHWM:"),
                kib_field(&rollup, "Pss:"),
            ) {
                (Some(rss), Some(hwm), Some(pss)) => {
                    sum.rss_kib += rss;
                    sum.hwm_kib += hwm;
                    sum.pss_kib += pss;
                }
                _ => bail!("no VmRSS, VmHWM or Pss for process {pid}"),
            }
        }
        Ok(sum)
    }
}

/// `Name:   1234 kB` from a /proc file.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// (busy, total) clock ticks of all CPUs since boot, from the first line of /proc/stat.
fn machine_ticks() -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    parse_machine_ticks(&stat).context("unexpected /proc/stat")
}

fn parse_machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Whether something listens on 127.0.0.1:`port` (from /proc/net/tcp: connecting would use
/// up ffmpeg's one RTSP listen).
pub fn listening(port: u16) -> bool {
    bound("/proc/net/tcp", port, "0A")
}

/// Whether a UDP socket is bound to 127.0.0.1:`port` (an SRT listener; from /proc/net/udp).
pub fn udp_bound(port: u16) -> bool {
    bound("/proc/net/udp", port, "07")
}

/// Whether `table` has a socket on 127.0.0.1:`port` in `state` (LISTEN for TCP, CLOSE, as
/// the kernel shows a bound socket, for UDP).
fn bound(table: &str, port: u16, state: &str) -> bool {
    let table = std::fs::read_to_string(table).unwrap_or_default();
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&local.as_str()) && f.get(3) == Some(&state)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_count_from_the_last_parenthesis() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 9 0 \
                    100 1000 200 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some((1234, 567)));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn machine_ticks_leave_out_idle_and_iowait() {
        let stat = "cpu  100 5 50 1000 20 1 2 3 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(parse_machine_ticks(stat), Some((161, 1181)));
        assert_eq!(parse_machine_ticks("intr 1 2"), None);
    }

    #[test]
    fn proc_memory_fields_are_kib() {
        let status = "Name:\tslotcast\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(kib_field(status, "VmRSS:"), Some(10240));
        assert_eq!(kib_field(status, "VmHWM:"), Some(20480));
        assert_eq!(kib_field("Pss_Anon: 5 kB\nPss: 7 kB\n", "Pss:"), Some(7));
        assert_eq!(kib_field(status, "Pss:"), None);
    }
}
