//! CPU share and resident memory of the services under test, read from
//! /proc while a step runs (Linux only; elsewhere the figures are absent).
//! The database and the broker, when they run on this machine, are
//! watched too: their CPU is most of what a checkout costs, and which of
//! them is busiest says where a deployment needs cores.

use std::collections::HashMap;
use std::time::Instant;

/// A process to watch, by the name the report prints.
#[derive(Clone, Debug)]
pub struct WatchedProcess {
    pub name: String,
    pub pid: u32,
}

/// Parses `--pid NAME=PID`.
pub fn parse_watched(text: &str) -> Result<WatchedProcess, String> {
    let (name, pid) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}' is not NAME=PID"))?;
    let pid = pid
        .trim()
        .parse()
        .map_err(|_| format!("'{pid}' is not a process id"))?;
    Ok(WatchedProcess {
        name: name.trim().to_owned(),
        pid,
    })
}

/// User plus system CPU time, in clock ticks, from the text of
/// /proc/<pid>/stat. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last ')'.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name: state is field 3; utime and stime are fields 14, 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// A `Key:   123 kB` line of /proc/<pid>/status, in KiB.
pub fn status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Busy and total jiffies of the whole machine from /proc/stat's `cpu`
/// line: what everything else on a shared box was doing meanwhile.
pub fn machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).unwrap_or(&0);
    Some((total - idle, total))
}

pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// The machine's busy cores between two readings of [`machine_ticks`]:
/// busy jiffies over all jiffies, times the cores.
pub fn busy_cores(start: Option<(u64, u64)>, end: Option<(u64, u64)>) -> Option<f64> {
    match (start, end) {
        (Some((busy0, total0)), Some((busy1, total1))) if total1 > total0 => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            Some(busy1.saturating_sub(busy0) as f64 / (total1 - total0) as f64 * cores)
        }
        _ => None,
    }
}

/// The servers a checkout uses, by the name the report prints and their
/// processes' command name (`/proc/<pid>/comm`): every backend of each.
pub const SERVERS: [(&str, &str); 2] = [("postgresql", "postgres"), ("rabbitmq", "beam.smp")];

/// CPU ticks of every process whose command name is `comm`, by pid.
fn ticks_of_every(comm: &str) -> HashMap<u32, u64> {
    ticks_of_matching(|pid| read_process(pid, "comm").is_some_and(|c| c.trim_end() == comm))
}

/// CPU ticks of every process `matches` picks by pid, by pid.
pub fn ticks_of_matching(matches: impl Fn(u32) -> bool) -> HashMap<u32, u64> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| matches(pid))
        .filter_map(|pid| Some((pid, cpu_ticks(&read_process(pid, "stat")?)?)))
        .collect()
}

/// The CPU ticks process `pid` has used, if it runs.
pub fn process_ticks(pid: u32) -> Option<u64> {
    read_process(pid, "stat").as_deref().and_then(cpu_ticks)
}

/// The busy and total jiffies of the whole machine now.
pub fn machine_ticks_now() -> Option<(u64, u64)> {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .as_deref()
        .and_then(machine_ticks)
}

/// Ticks a group of processes used between two readings. A process that
/// started meanwhile counts whole; one that ended meanwhile is not seen
/// (its last ticks are lost, a few at most for a database's backends,
/// which live as long as their pool). `None` when none is running.
pub fn group_ticks_used(start: &HashMap<u32, u64>, end: &HashMap<u32, u64>) -> Option<u64> {
    if end.is_empty() {
        return None;
    }
    Some(
        end.iter()
            .map(|(pid, now)| now.saturating_sub(start.get(pid).copied().unwrap_or(0)))
            .sum(),
    )
}

pub fn read_process(pid: u32, file: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()
}

/// One process's figures over a step.
#[derive(Clone, Debug)]
pub struct ProcessUsage {
    pub name: String,
    /// CPU time over wall time: 1.0 is one core busy the whole step.
    pub cpu_cores: Option<f64>,
    /// Highest resident set seen while sampling during the step.
    pub peak_rss_kib: Option<u64>,
    /// The kernel's high-water mark since the process started (VmHWM).
    pub hwm_kib: Option<u64>,
    /// A server's processes together ([`SERVERS`]): CPU only, since their
    /// resident sets share one buffer cache and do not add up.
    pub group: bool,
}

/// What a step used: the services, the bench itself and the whole machine.
#[derive(Clone, Debug, Default)]
pub struct StepUsage {
    pub processes: Vec<ProcessUsage>,
    /// Busy CPU of the whole machine, in cores.
    pub machine_cores: Option<f64>,
}

/// Samples the watched processes from the start of a step to its end.
pub struct UsageSampler {
    processes: Vec<WatchedProcess>,
    /// Each of [`SERVERS`] (name, command name) with its processes' ticks
    /// at the start.
    groups: Vec<(&'static str, &'static str, HashMap<u32, u64>)>,
    started: Instant,
    start_ticks: Vec<Option<u64>>,
    peak_rss: Vec<Option<u64>>,
    machine_start: Option<(u64, u64)>,
}

impl UsageSampler {
    /// Starts sampling `watched` and the bench's own process.
    pub fn start(watched: &[WatchedProcess]) -> Self {
        let mut processes = watched.to_vec();
        processes.push(WatchedProcess {
            name: "bench".into(),
            pid: std::process::id(),
        });
        let start_ticks = processes
            .iter()
            .map(|p| read_process(p.pid, "stat").as_deref().and_then(cpu_ticks))
            .collect();
        let groups = SERVERS
            .iter()
            .map(|&(name, comm)| (name, comm, ticks_of_every(comm)))
            .collect();
        let mut sampler = Self {
            peak_rss: vec![None; processes.len()],
            processes,
            groups,
            started: Instant::now(),
            start_ticks,
            machine_start: machine_ticks_now(),
        };
        sampler.sample();
        sampler
    }

    /// Records the current resident set of each process; call it about
    /// once a second.
    pub fn sample(&mut self) {
        for (process, peak) in self.processes.iter().zip(&mut self.peak_rss) {
            if let Some(rss) = read_process(process.pid, "status")
                .as_deref()
                .and_then(|s| status_kib(s, "VmRSS"))
            {
                *peak = Some(peak.map_or(rss, |p: u64| p.max(rss)));
            }
        }
    }

    pub fn finish(mut self) -> StepUsage {
        self.sample();
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let per_second = ticks_per_second();
        let processes = self
            .processes
            .iter()
            .zip(&self.start_ticks)
            .zip(&self.peak_rss)
            .map(|((process, start), peak)| {
                let now = read_process(process.pid, "stat")
                    .as_deref()
                    .and_then(cpu_ticks);
                let cpu_cores = match (start, now) {
                    (Some(start), Some(now)) => {
                        Some(now.saturating_sub(*start) as f64 / per_second / seconds)
                    }
                    _ => None,
                };
                ProcessUsage {
                    name: process.name.clone(),
                    cpu_cores,
                    peak_rss_kib: *peak,
                    hwm_kib: read_process(process.pid, "status")
                        .as_deref()
                        .and_then(|s| status_kib(s, "VmHWM")),
                    group: false,
                }
            })
            .chain(self.groups.iter().filter_map(|(name, comm, start)| {
                let used = group_ticks_used(start, &ticks_of_every(comm))?;
                Some(ProcessUsage {
                    name: (*name).to_owned(),
                    cpu_cores: Some(used as f64 / per_second / seconds),
                    peak_rss_kib: None,
                    hwm_kib: None,
                    group: true,
                })
            }))
            .collect();
        let machine_cores = busy_cores(self.machine_start, machine_ticks_now());
        StepUsage {
            processes,
            machine_cores,
        }
    }
}

impl std::fmt::Display for StepUsage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for process in &self.processes {
            if !first {
                write!(f, "  ")?;
            }
            first = false;
            write!(f, "{}", process.name)?;
            match process.cpu_cores {
                Some(cores) => write!(f, " cpu {cores:.2}")?,
                None => write!(f, " cpu ?")?,
            }
            match process.peak_rss_kib {
                Some(kib) => write!(f, " rss {:.1} MiB", kib as f64 / 1024.0)?,
                None if process.group => {}
                None => write!(f, " rss ?")?,
            }
        }
        if let Some(cores) = self.machine_cores {
            write!(f, "  | machine busy {cores:.2} cores")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_add_user_and_system_time_even_with_a_tricky_name() {
        let stat = "4242 (we ird) name) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    250 75 0 0 20 0 9 0 100 123456 789 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(325));
    }

    #[test]
    fn status_values_are_read_in_kib() {
        let status = "Name:\torchestrator\nVmHWM:\t   40960 kB\nVmRSS:\t   30720 kB\n";
        assert_eq!(status_kib(status, "VmHWM"), Some(40960));
        assert_eq!(status_kib(status, "VmRSS"), Some(30720));
        assert_eq!(status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn machine_busy_excludes_idle_and_iowait() {
        let stat = "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(machine_ticks(stat), Some((160, 1000)));
    }

    #[test]
    fn watched_processes_parse_from_name_equals_pid() {
        let watched = parse_watched("inventory=1234").unwrap();
        assert_eq!((watched.name.as_str(), watched.pid), ("inventory", 1234));
        assert!(parse_watched("inventory").is_err());
        assert!(parse_watched("inventory=x").is_err());
    }

    #[test]
    fn a_group_counts_what_each_process_used_and_a_new_one_whole() {
        let start = HashMap::from([(10, 100), (11, 50), (12, 7)]);
        // 12 ended, 13 started during the step.
        let end = HashMap::from([(10, 160), (11, 50), (13, 30)]);
        assert_eq!(group_ticks_used(&start, &end), Some(60 + 30));
        assert_eq!(group_ticks_used(&start, &HashMap::new()), None);
    }

    #[test]
    fn a_group_is_found_by_its_command_name() {
        let comm = read_process(std::process::id(), "comm").unwrap();
        let found = ticks_of_every(comm.trim_end());
        assert!(found.contains_key(&std::process::id()), "{found:?}");
        assert!(ticks_of_every("no-such-command").is_empty());
    }

    #[test]
    fn the_bench_sees_its_own_process() {
        let usage = UsageSampler::start(&[]).finish();
        let bench = &usage.processes[0];
        assert_eq!(bench.name, "bench");
        assert!(bench.peak_rss_kib.unwrap() > 0, "{usage}");
        assert!(bench.cpu_cores.is_some(), "{usage}");
    }
}
