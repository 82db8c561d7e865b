//! Where the CPU went during a run, read from Linux's `/proc`: the server's
//! and the load generator's CPU time per request, and the share of the
//! machine that stayed idle.
//!
//! When both programs share the machine's cores, these say what limits a
//! scenario: with idle near zero it is CPU (and the CPU per request says
//! whose), with idle to spare it is waiting, for the disk's fsync say.

use serde::Serialize;

/// Clock ticks per second of the CPU times in `/proc` (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// The CPU counters at one moment, in clock ticks.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    /// The server process, when the load generator knows its pid (it started it).
    server: Option<u64>,
    load_generator: u64,
    /// The whole machine, all cores.
    machine_busy: u64,
    machine_idle: u64,
}

impl Snapshot {
    /// `None` where `/proc` cannot be read (not Linux).
    pub fn take(server_pid: Option<u32>) -> Option<Self> {
        let read = |path: String| std::fs::read_to_string(path).ok();
        let load_generator = process_ticks(&read("/proc/self/stat".into())?)?;
        let server = server_pid.and_then(|pid| process_ticks(&read(format!("/proc/{pid}/stat"))?));
        let (machine_busy, machine_idle) = machine_ticks(&read("/proc/stat".into())?)?;
        Some(Snapshot {
            server,
            load_generator,
            machine_busy,
            machine_idle,
        })
    }
}

/// CPU used between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuUse {
    /// Microseconds of server CPU (all its threads, user and kernel) per request.
    pub server_us_per_request: Option<f64>,
    /// The same for this load generator.
    pub load_generator_us_per_request: f64,
    /// Share of the machine's CPU time that no program used (idle or waiting for I/O).
    pub machine_idle: f64,
}

impl CpuUse {
    pub fn between(before: &Snapshot, after: &Snapshot, requests: u64) -> Self {
        let per_request =
            |ticks: u64| ticks as f64 / TICKS_PER_SECOND * 1e6 / requests.max(1) as f64;
        let server = before
            .server
            .zip(after.server)
            .map(|(before, after)| per_request(after.saturating_sub(before)));
        let busy = after.machine_busy.saturating_sub(before.machine_busy);
        let idle = after.machine_idle.saturating_sub(before.machine_idle);
        CpuUse {
            server_us_per_request: server,
            load_generator_us_per_request: per_request(
                after.load_generator.saturating_sub(before.load_generator),
            ),
            machine_idle: idle as f64 / (busy + idle).max(1) as f64,
        }
    }
}

/// User plus system ticks of a process, from its `/proc/<pid>/stat`. The
/// command name (field 2) may hold spaces and parentheses, so fields are
/// counted from the last `)`: the state is field 3, utime 14, stime 15.
fn process_ticks(stat: &str) -> Option<u64> {
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let utime: u64 = fields.nth(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Busy and idle ticks of all cores, from the `cpu` line of `/proc/stat`:
/// user nice system idle iowait irq softirq steal (guest time is already in user).
fn machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    let [user, nice, system, idle, iowait, irq, softirq, steal] = ticks[..] else {
        return None;
    };
    Some((user + nice + system + irq + softirq + steal, idle + iowait))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_ticks_add_user_and_system_time_whatever_the_command_name() {
        let stat = "4242 (actix-rt|system (x)) S 1 4242 4242 0 -1 4194560 \
                    1000 0 0 0 250 130 0 0 20 0 9 0 123 456 789";
        assert_eq!(process_ticks(stat), Some(380));
        assert_eq!(process_ticks("4242 (cut short) S 1"), None);
    }

    #[test]
    fn machine_ticks_count_idle_and_iowait_as_idle() {
        let stat = "cpu  100 5 40 800 20 0 30 5 7 0\ncpu0 50 2 20 400 10 0 15 2 3 0\n";
        assert_eq!(machine_ticks(stat), Some((180, 820)));
        assert_eq!(machine_ticks("intr 1 2 3\n"), None);
    }

    #[test]
    fn cpu_use_is_per_request_and_idle_is_a_share_of_the_machine() {
        let before = Snapshot {
            server: Some(1_000),
            load_generator: 500,
            machine_busy: 10_000,
            machine_idle: 2_000,
        };
        let after = Snapshot {
            server: Some(1_100),
            load_generator: 550,
            machine_busy: 10_150,
            machine_idle: 2_050,
        };
        // 100 ticks = 1 s of server CPU over 100,000 requests: 10 µs each.
        let used = CpuUse::between(&before, &after, 100_000);
        assert_eq!(used.server_us_per_request, Some(10.0));
        assert_eq!(used.load_generator_us_per_request, 5.0);
        assert_eq!(used.machine_idle, 0.25);
        let unknown_server = Snapshot {
            server: None,
            ..after
        };
        assert_eq!(
            CpuUse::between(&before, &unknown_server, 100_000).server_us_per_request,
            None
        );
    }
}
