//! Two runs side by side: the same bench on the fresh system and with its
//! history loaded, from the files each run left (`steps.csv`, `idle.csv`).

use std::path::Path;

use crate::error::BenchError;

/// The figures an operator compares between two runs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunFigures {
    pub one_p50_ms: Option<f64>,
    pub one_p99_ms: Option<f64>,
    /// In flight in the closed loop, and the checkouts per second it made.
    pub closed: Option<(u64, f64)>,
    pub highest_held: Option<f64>,
    /// `machine` first, then each process, in cores.
    pub idle: Vec<(String, Option<f64>)>,
    /// The machine's floor as this run measured it (checkouts per second
    /// the box allows, one alone in ms): two halves of a run minutes apart
    /// are only comparable as far as the machine under them held still.
    pub floor: Option<(f64, f64)>,
}

/// Reads a run's folder: `steps.csv` (as `checkout-bench run` writes it)
/// and, if present, `idle.csv` and `floor.csv`.
pub fn read_run(folder: &Path) -> Result<RunFigures, BenchError> {
    let steps = std::fs::read_to_string(folder.join("steps.csv"))?;
    let optional = |name: &str| match std::fs::read_to_string(folder.join(name)) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    };
    let mut run = figures(&steps, optional("idle.csv")?.as_deref())?;
    if let Some(floor) = optional("floor.csv")? {
        run.floor = floor_figures(&floor)?;
    }
    Ok(run)
}

/// The header and row `floor.csv` holds.
pub fn floor_csv(checkouts_per_second: f64, alone_ms: f64) -> String {
    format!("checkouts_per_second,alone_ms\n{checkouts_per_second:.1},{alone_ms:.2}\n")
}

fn floor_figures(text: &str) -> Result<Option<(f64, f64)>, BenchError> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let Some(record) = reader.records().next() else {
        return Ok(None);
    };
    let record = record?;
    let number = |i: usize| record.get(i).and_then(|t| t.parse::<f64>().ok());
    Ok(number(0).zip(number(1)))
}

/// The figures of a run from the text of its files. The closed-loop rows
/// come first, one at a time then at the concurrency, as `run` writes them.
pub fn figures(steps_csv: &str, idle_csv: Option<&str>) -> Result<RunFigures, BenchError> {
    let mut reader = csv::Reader::from_reader(steps_csv.as_bytes());
    let header = reader.headers()?.clone();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| BenchError::Usage(format!("steps.csv has no column {name}")))
    };
    let (load, concurrency, offered, achieved, p50, p99, verdict) = (
        column("load")?,
        column("concurrency")?,
        column("offered_per_s")?,
        column("achieved_per_s")?,
        column("p50_ms")?,
        column("p99_ms")?,
        column("verdict")?,
    );
    let number = |text: &str| text.parse::<f64>().ok();
    let mut run = RunFigures::default();
    let mut closed_rows = 0;
    for record in reader.records() {
        let record = record?;
        let field = |i: usize| record.get(i).unwrap_or("");
        match field(load) {
            "closed" => {
                closed_rows += 1;
                if closed_rows == 1 {
                    run.one_p50_ms = number(field(p50));
                    run.one_p99_ms = number(field(p99));
                } else {
                    run.closed = field(concurrency).parse().ok().zip(number(field(achieved)));
                }
            }
            "open" if field(verdict) == "held" => {
                if let Some(rate) = number(field(offered)) {
                    run.highest_held = Some(run.highest_held.map_or(rate, |r: f64| r.max(rate)));
                }
            }
            _ => {}
        }
    }
    if let Some(idle) = idle_csv {
        let mut reader = csv::Reader::from_reader(idle.as_bytes());
        for record in reader.records() {
            let record = record?;
            let name = record.get(0).unwrap_or("").to_owned();
            run.idle.push((name, record.get(1).and_then(number)));
        }
    }
    Ok(run)
}

/// The side-by-side table: one row per figure, the change in the last
/// column where both runs have it.
pub fn table(fresh: &RunFigures, history: &RunFigures, history_label: &str) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} ms"));
    let rate = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}/s"));
    let cores = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
    // Of the figures as printed: a change between two values that both
    // print as 0.000 is no change worth a percentage.
    let change_at = |decimals: i32| {
        let scale = 10f64.powi(decimals);
        move |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if (a * scale).round() > 0.0 => {
                let (a, b) = ((a * scale).round(), (b * scale).round());
                format!("{:+.0}%", (b / a - 1.0) * 100.0)
            }
            _ => String::new(),
        }
    };
    let change = change_at(1);
    let change_cores = change_at(3);
    let in_flight = fresh.closed.or(history.closed).map_or(0, |(n, _)| n);
    let mut rows: Vec<[String; 4]> = Vec::new();
    if fresh.floor.is_some() || history.floor.is_some() {
        let rate_of = |run: &RunFigures| run.floor.map(|(r, _)| r);
        let alone_of = |run: &RunFigures| run.floor.map(|(_, a)| a);
        rows.push([
            "machine floor, checkouts/s".into(),
            rate(rate_of(fresh)),
            rate(rate_of(history)),
            change(rate_of(fresh), rate_of(history)),
        ]);
        rows.push([
            "machine floor, one alone".into(),
            ms(alone_of(fresh)),
            ms(alone_of(history)),
            change(alone_of(fresh), alone_of(history)),
        ]);
    }
    rows.extend([
        [
            "one at a time, p50".into(),
            ms(fresh.one_p50_ms),
            ms(history.one_p50_ms),
            change(fresh.one_p50_ms, history.one_p50_ms),
        ],
        [
            "one at a time, p99".into(),
            ms(fresh.one_p99_ms),
            ms(history.one_p99_ms),
            change(fresh.one_p99_ms, history.one_p99_ms),
        ],
        [
            format!("closed loop, {in_flight} in flight"),
            rate(fresh.closed.map(|(_, r)| r)),
            rate(history.closed.map(|(_, r)| r)),
            change(fresh.closed.map(|(_, r)| r), history.closed.map(|(_, r)| r)),
        ],
        [
            "open loop, highest rate held".into(),
            fresh.highest_held.map_or("none".into(), |r| rate(Some(r))),
            history
                .highest_held
                .map_or("none".into(), |r| rate(Some(r))),
            change(fresh.highest_held, history.highest_held),
        ],
    ]);
    // Every process either run measured idle, in the fresh run's order.
    let mut names: Vec<&str> = fresh.idle.iter().map(|(n, _)| n.as_str()).collect();
    for (name, _) in &history.idle {
        if !names.contains(&name.as_str()) {
            names.push(name);
        }
    }
    let idle_of = |run: &RunFigures, name: &str| {
        run.idle
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, c)| *c)
    };
    for name in names {
        let label = if name == "machine" {
            "idle CPU, machine-wide (cores)".to_owned()
        } else if name == "system" {
            "idle CPU, the system's processes".to_owned()
        } else {
            format!("idle CPU, {name}")
        };
        let (a, b) = (idle_of(fresh, name), idle_of(history, name));
        rows.push([label, cores(a), cores(b), change_cores(a, b)]);
    }

    let head = [
        String::new(),
        "fresh".to_owned(),
        history_label.to_owned(),
        "change".to_owned(),
    ];
    let widths: Vec<usize> = (0..4)
        .map(|i| {
            rows.iter()
                .chain(std::iter::once(&head))
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for row in std::iter::once(&head).chain(&rows) {
        let line = format!(
            "{:<w0$}  {:>w1$}  {:>w2$}  {:>w3$}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEPS: &str = "\
load,concurrency,offered_per_s,checkouts,completed,errors,achieved_per_s,p50_ms,p90_ms,p99_ms,p999_ms,max_ms,verdict,machine_busy_cores
closed,1,,200,200,0,69.00,13.800,16.400,24.400,56.500,60.000,,1.2
closed,32,,2000,2000,0,203.00,155.000,200.000,250.000,311.000,400.000,,1.9
open,,50,500,500,0,50.00,17.600,20.700,36.200,46.300,50.000,held,1.0
open,,100,1000,1000,0,100.00,22.900,29.500,49.700,80.200,90.000,held,1.4
open,,150,1500,1500,0,149.60,67.800,87.900,112.000,135.000,140.000,slow,1.8
open,,300,3000,2900,100,162.00,7100.000,8300.000,9300.000,9300.000,9300.000,broken,2.0
";

    #[test]
    fn a_run_gives_its_closed_loops_and_highest_rate_held() {
        let run = figures(STEPS, Some("name,cpu_cores\nmachine,0.0310\npostgres,\n")).unwrap();
        assert_eq!(run.one_p50_ms, Some(13.8));
        assert_eq!(run.one_p99_ms, Some(24.4));
        assert_eq!(run.closed, Some((32, 203.0)));
        assert_eq!(run.highest_held, Some(100.0));
        assert_eq!(
            run.idle,
            vec![("machine".into(), Some(0.031)), ("postgres".into(), None)]
        );
    }

    #[test]
    fn a_run_with_nothing_held_and_no_idle_file_says_so() {
        let steps = "load,concurrency,offered_per_s,achieved_per_s,p50_ms,p99_ms,verdict\n\
                     closed,1,,50.0,20.0,30.0,\nopen,,50,20.0,900.0,2000.0,broken\n";
        let run = figures(steps, None).unwrap();
        assert_eq!(run.closed, None);
        assert_eq!(run.highest_held, None);
        assert!(run.idle.is_empty());
    }

    #[test]
    fn the_floor_of_each_half_heads_the_table_when_both_measured_it() {
        let mut fresh = figures(STEPS, None).unwrap();
        let mut history = fresh.clone();
        fresh.floor = floor_figures(&floor_csv(944.0, 10.2)).unwrap();
        history.floor = floor_figures(&floor_csv(441.3, 20.4)).unwrap();
        let text = table(&fresh, &history, "with history");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1],
            "machine floor, checkouts/s      944/s         441/s    -53%"
        );
        assert_eq!(
            lines[2],
            "machine floor, one alone      10.2 ms       20.4 ms   +100%"
        );
        assert!(lines[3].starts_with("one at a time, p50"));
    }

    #[test]
    fn a_file_without_the_columns_is_refused() {
        assert!(figures("load,p50_ms\nclosed,1\n", None).is_err());
    }

    #[test]
    fn the_table_lines_up_both_runs_and_their_change() {
        let fresh = figures(
            STEPS,
            Some("name,cpu_cores\nmachine,0.0200\norchestrator,0.0040\ninventory,0.0003\n"),
        )
        .unwrap();
        let mut history = fresh.clone();
        history.one_p50_ms = Some(15.18);
        history.closed = Some((32, 101.5));
        history.highest_held = None;
        history.idle = vec![
            ("machine".into(), Some(0.03)),
            ("orchestrator".into(), Some(0.0001)),
            ("inventory".into(), Some(0.0)),
            ("rabbitmq".into(), Some(0.01)),
        ];
        let text = table(&fresh, &history, "with 20,000 sagas");
        let expected = [
            "                                  fresh  with 20,000 sagas  change",
            "one at a time, p50              13.8 ms            15.2 ms    +10%",
            "one at a time, p99              24.4 ms            24.4 ms     +0%",
            "closed loop, 32 in flight         203/s              102/s    -50%",
            "open loop, highest rate held      100/s               none",
            "idle CPU, machine-wide (cores)    0.020              0.030    +50%",
            "idle CPU, orchestrator            0.004              0.000   -100%",
            "idle CPU, inventory               0.000              0.000",
            "idle CPU, rabbitmq                    -              0.010",
        ];
        assert_eq!(text.lines().collect::<Vec<_>>(), expected);
    }
}
