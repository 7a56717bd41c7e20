//! Idle CPU: what the system costs with no checkout at all. Timers,
//! gauges, retention and the broker's own housekeeping run whether or not
//! anyone buys anything, and some of them read more as history grows: this
//! is the figure that shows it.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, PgConnection};

use crate::error::BenchError;
use crate::service_usage::{
    busy_cores, group_ticks_used, machine_ticks_now, process_ticks, read_process,
    ticks_of_matching, ticks_per_second, WatchedProcess,
};

/// A group of server processes, found by their command name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    Postgres,
    Rabbitmq,
}

impl Server {
    pub fn name(self) -> &'static str {
        match self {
            Server::Postgres => "postgres",
            Server::Rabbitmq => "rabbitmq",
        }
    }

    /// Every PostgreSQL process (postmaster, backends, checkpointer, ...)
    /// is `postgres`; RabbitMQ is the Erlang VM `beam.smp` and its helpers.
    pub fn runs_as(self, comm: &str) -> bool {
        match self {
            Server::Postgres => comm.starts_with("postgres"),
            Server::Rabbitmq => comm == "beam.smp" || comm.starts_with("rabbitmq"),
        }
    }
}

/// Whether a PostgreSQL process serves one of the databases named
/// `prefix...`: a backend's (or autovacuum worker's) title names its
/// database, as in `postgres: 15/main: postgres bench1_orchestrator
/// 127.0.0.1(5432) idle`.
pub fn serves_database(cmdline: &str, prefix: &str) -> bool {
    !prefix.is_empty()
        && cmdline
            .split(|c: char| c.is_whitespace() || c == '\0')
            .any(|word| word.starts_with(prefix))
}

/// What each process used over an idle stretch, in cores.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IdleReport {
    pub seconds: f64,
    pub machine_cores: Option<f64>,
    /// The watched services, then each server, in that order; `None`
    /// where the process could not be read.
    pub processes: Vec<(String, Option<f64>)>,
}

impl IdleReport {
    /// The system's own processes: the services, every PostgreSQL and
    /// RabbitMQ process (not the `postgres <prefix>*` part, already in
    /// PostgreSQL's). The machine-wide figure also holds whatever else the
    /// machine runs; `None` if any of them could not be read.
    pub fn system_cores(&self) -> Option<f64> {
        self.processes
            .iter()
            .filter(|(name, _)| !name.ends_with('*'))
            .map(|(_, cores)| *cores)
            .sum()
    }

    /// `idle.csv`: `name,cpu_cores`, the machine and the system first.
    pub fn csv(&self) -> String {
        let figure = |cores: Option<f64>| cores.map_or(String::new(), |c| format!("{c:.4}"));
        let mut text = String::from("name,cpu_cores\n");
        text.push_str(&format!("machine,{}\n", figure(self.machine_cores)));
        text.push_str(&format!("system,{}\n", figure(self.system_cores())));
        for (name, cores) in &self.processes {
            text.push_str(&format!("{name},{}\n", figure(*cores)));
        }
        text
    }
}

impl std::fmt::Display for IdleReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let figure = |cores: Option<f64>| cores.map_or("?".to_owned(), |c| format!("{c:.3}"));
        write!(
            f,
            "idle: {} cores machine-wide, {} the system's processes (",
            figure(self.machine_cores),
            figure(self.system_cores())
        )?;
        for (i, (name, cores)) in self.processes.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{name} {}", figure(*cores))?;
        }
        write!(f, ") over {:.0} s", self.seconds)
    }
}

/// Waits until the orchestrator has no saga in flight and nothing in its
/// outbox (at most `deadline`), then writes back PostgreSQL's dirty pages,
/// so that the idle stretch measures the system at rest rather than the
/// end of the run before it.
pub async fn settle(orchestrator_url: &str, deadline: Duration) -> Result<(), BenchError> {
    let mut connection = PgConnection::connect(orchestrator_url).await?;
    let started = Instant::now();
    loop {
        let busy: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM sagas WHERE status IN ('running', 'compensating'))
                  + (SELECT count(*) FROM outbox)",
        )
        .fetch_one(&mut connection)
        .await?;
        if busy == 0 {
            break;
        }
        if started.elapsed() >= deadline {
            eprintln!(
                "  [idle] still {busy} sagas in flight or commands unsent after {deadline:?}: measuring anyway"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Err(error) = connection.execute("CHECKPOINT").await {
        eprintln!(
            "  [idle] no checkpoint ({error}): the figures include writing back the run's pages"
        );
    }
    connection.close().await?;
    Ok(())
}

/// Measures each watched process, each server and the whole machine over
/// `length` of no traffic. With `database_prefix`, the PostgreSQL
/// processes serving those databases are also shown on their own
/// (`postgres <prefix>*`): on a shared machine, the rest is someone else's.
pub async fn measure(
    watched: &[WatchedProcess],
    length: Duration,
    database_prefix: Option<&str>,
) -> IdleReport {
    let comm = |pid: u32| read_process(pid, "comm").map(|c| c.trim_end().to_owned());
    let group =
        |server: Server| ticks_of_matching(|pid| comm(pid).is_some_and(|c| server.runs_as(&c)));
    let ours = |prefix: &str| {
        ticks_of_matching(|pid| {
            comm(pid).is_some_and(|c| Server::Postgres.runs_as(&c))
                && read_process(pid, "cmdline").is_some_and(|line| serves_database(&line, prefix))
        })
    };
    let servers = [Server::Postgres, Server::Rabbitmq];

    let machine_start = machine_ticks_now();
    let started = Instant::now();
    let process_start: Vec<Option<u64>> = watched.iter().map(|p| process_ticks(p.pid)).collect();
    let server_start: Vec<HashMap<u32, u64>> = servers.iter().map(|&s| group(s)).collect();
    let ours_start = database_prefix.map(ours);

    tokio::time::sleep(length).await;

    let process_end: Vec<Option<u64>> = watched.iter().map(|p| process_ticks(p.pid)).collect();
    let server_end: Vec<HashMap<u32, u64>> = servers.iter().map(|&s| group(s)).collect();
    let ours_end = database_prefix.map(ours);
    let seconds = started.elapsed().as_secs_f64();
    let machine_cores = busy_cores(machine_start, machine_ticks_now());

    let cores = |ticks: u64| ticks as f64 / ticks_per_second() / seconds;
    let mut processes: Vec<(String, Option<f64>)> = watched
        .iter()
        .zip(process_start.iter().zip(&process_end))
        .map(|(process, (start, end))| {
            let used = match (start, end) {
                (Some(start), Some(end)) => Some(cores(end.saturating_sub(*start))),
                _ => None,
            };
            (process.name.clone(), used)
        })
        .collect();
    for ((server, start), end) in servers.iter().zip(&server_start).zip(&server_end) {
        processes.push((
            server.name().to_owned(),
            group_ticks_used(start, end).map(cores),
        ));
        if let (Server::Postgres, Some(prefix), Some(start), Some(end)) =
            (server, database_prefix, &ours_start, &ours_end)
        {
            processes.push((
                format!("postgres {prefix}*"),
                Some(group_ticks_used(start, end).map_or(0.0, cores)),
            ));
        }
    }
    IdleReport {
        seconds,
        machine_cores,
        processes,
    }
}

/// Writes the report as `idle.csv` into `folder`.
pub fn write_csv(folder: &Path, report: &IdleReport) -> Result<(), BenchError> {
    std::fs::create_dir_all(folder)?;
    std::fs::write(folder.join("idle.csv"), report.csv())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> IdleReport {
        IdleReport {
            seconds: 30.02,
            machine_cores: Some(0.0312),
            processes: vec![
                ("orchestrator".into(), Some(0.004)),
                ("inventory".into(), None),
                ("postgres".into(), Some(0.0123)),
            ],
        }
    }

    #[test]
    fn the_line_names_every_process_and_the_stretch() {
        assert_eq!(
            report().to_string(),
            "idle: 0.031 cores machine-wide, ? the system's processes (orchestrator 0.004, inventory ?, postgres 0.012) over 30 s"
        );
    }

    #[test]
    fn the_system_is_its_services_and_servers_counted_once() {
        let report = IdleReport {
            seconds: 30.0,
            machine_cores: Some(0.05),
            processes: vec![
                ("orchestrator".into(), Some(0.002)),
                ("postgres".into(), Some(0.010)),
                ("postgres bench1_*".into(), Some(0.008)),
                ("rabbitmq".into(), Some(0.020)),
            ],
        };
        let system = report.system_cores().unwrap();
        assert!((system - 0.032).abs() < 1e-9, "{system}");
        assert!(report
            .csv()
            .starts_with("name,cpu_cores\nmachine,0.0500\nsystem,0.0320\n"));
    }

    #[test]
    fn the_csv_puts_the_machine_first_and_leaves_unread_figures_empty() {
        assert_eq!(
            report().csv(),
            "name,cpu_cores\nmachine,0.0312\nsystem,\norchestrator,0.0040\ninventory,\npostgres,0.0123\n"
        );
    }

    #[test]
    fn servers_are_found_by_command_name() {
        assert!(Server::Postgres.runs_as("postgres"));
        assert!(Server::Rabbitmq.runs_as("beam.smp"));
        assert!(Server::Rabbitmq.runs_as("rabbitmq-server"));
        assert!(!Server::Rabbitmq.runs_as("erl_child_setup"));
        assert!(!Server::Postgres.runs_as("orchestrator"));
    }

    #[test]
    fn a_backend_is_ours_when_its_title_names_one_of_our_databases() {
        let backend = "postgres: 15/main: postgres bench1_orchestrator 127.0.0.1(40312) idle";
        assert!(serves_database(backend, "bench1_"));
        assert!(!serves_database(backend, "bench2_"));
        assert!(serves_database(
            "postgres: 15/main: autovacuum worker bench1_inventory",
            "bench1_"
        ));
        assert!(!serves_database(
            "postgres: 15/main: checkpointer ",
            "bench1_"
        ));
        assert!(!serves_database(backend, ""));
    }

    #[tokio::test]
    async fn an_idle_stretch_sees_the_machine_and_a_watched_process() {
        let me = WatchedProcess {
            name: "bench".into(),
            pid: std::process::id(),
        };
        let report = measure(&[me], Duration::from_millis(50), Some("no_such_db_")).await;
        assert!(report.seconds >= 0.05, "{report}");
        assert_eq!(report.processes[0].0, "bench");
        assert!(report.processes[0].1.is_some(), "{report}");
        let ours = report
            .processes
            .iter()
            .find(|(name, _)| name == "postgres no_such_db_*");
        assert_eq!(ours, Some(&("postgres no_such_db_*".to_owned(), Some(0.0))));
    }
}
