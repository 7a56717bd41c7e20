//! The run's results on disk: one CSV row per closed-loop run or open-loop
//! step, in the folder the run names.

use std::path::{Path, PathBuf};

use crate::error::BenchError;
use crate::latency::millis;
use crate::step::{Load, StepReport};

/// `bench-results/<UTC timestamp>` under `root`, created.
pub fn results_folder(root: &Path) -> Result<PathBuf, BenchError> {
    let folder = root.join(chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string());
    std::fs::create_dir_all(&folder)?;
    Ok(folder)
}

pub fn csv_header(processes: &[String]) -> Vec<String> {
    let mut header: Vec<String> = [
        "load",
        "concurrency",
        "offered_per_s",
        "checkouts",
        "completed",
        "errors",
        "achieved_per_s",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "p999_ms",
        "max_ms",
        "verdict",
        "machine_busy_cores",
    ]
    .map(String::from)
    .to_vec();
    for name in processes {
        header.push(format!("{name}_cpu_cores"));
        header.push(format!("{name}_peak_rss_mib"));
        header.push(format!("{name}_hwm_mib"));
    }
    header
}

/// One step as a CSV record, its process columns in `processes` order
/// (empty where a figure could not be read).
pub fn csv_record(step: &StepReport, processes: &[String]) -> Vec<String> {
    let ms = |d| format!("{:.3}", millis(d));
    let optional = |value: Option<f64>| value.map_or(String::new(), |v| format!("{v:.3}"));
    let mib = |kib: Option<u64>| optional(kib.map(|k| k as f64 / 1024.0));
    let (load, concurrency, offered_rate) = match step.load {
        Load::Closed { concurrency } => ("closed", concurrency.to_string(), String::new()),
        Load::Open { rate } => ("open", String::new(), format!("{rate}")),
    };
    let mut record = vec![
        load.to_owned(),
        concurrency,
        offered_rate,
        step.offered.to_string(),
        step.completed.to_string(),
        step.errors.to_string(),
        format!("{:.2}", step.achieved_rate),
        ms(step.latency.p50),
        ms(step.latency.p90),
        ms(step.latency.p99),
        ms(step.latency.p999),
        ms(step.latency.max),
        step.verdict
            .as_ref()
            .map_or(String::new(), |v| v.label().to_owned()),
        optional(step.usage.machine_cores),
    ];
    for name in processes {
        let usage = step.usage.processes.iter().find(|p| &p.name == name);
        record.push(optional(usage.and_then(|u| u.cpu_cores)));
        record.push(mib(usage.and_then(|u| u.peak_rss_kib)));
        record.push(mib(usage.and_then(|u| u.hwm_kib)));
    }
    record
}

pub fn write_csv(path: &Path, steps: &[StepReport]) -> Result<(), BenchError> {
    let processes: Vec<String> = steps
        .first()
        .map(|s| s.usage.processes.iter().map(|p| p.name.clone()).collect())
        .unwrap_or_default();
    let mut writer = csv::Writer::from_path(path)?;
    writer.write_record(csv_header(&processes))?;
    for step in steps {
        writer.write_record(csv_record(step, &processes))?;
    }
    writer.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::latency::LatencySummary;
    use crate::service_usage::{ProcessUsage, StepUsage};
    use crate::verdict::Verdict;

    fn open_step() -> StepReport {
        StepReport {
            load: Load::Open { rate: 200.0 },
            offered: 2000,
            completed: 1998,
            errors: 2,
            achieved_rate: 199.8,
            latency: LatencySummary {
                count: 2000,
                p50: Duration::from_micros(12_500),
                p90: Duration::from_millis(20),
                p99: Duration::from_millis(45),
                p999: Duration::from_millis(80),
                max: Duration::from_millis(120),
            },
            usage: StepUsage {
                processes: vec![ProcessUsage {
                    name: "orchestrator".into(),
                    cpu_cores: Some(0.25),
                    peak_rss_kib: Some(40 * 1024),
                    hwm_kib: None,
                    group: false,
                }],
                machine_cores: Some(1.5),
            },
            verdict: Some(Verdict::Held),
            outcomes: BTreeMap::new(),
            first_error: None,
        }
    }

    #[test]
    fn an_open_step_row_lines_up_with_the_header() {
        let processes = vec!["orchestrator".to_owned(), "inventory".to_owned()];
        let header = csv_header(&processes);
        let record = csv_record(&open_step(), &processes);
        assert_eq!(header.len(), record.len());
        let field = |name: &str| &record[header.iter().position(|h| h == name).unwrap()];
        assert_eq!(field("load"), "open");
        assert_eq!(field("concurrency"), "");
        assert_eq!(field("offered_per_s"), "200");
        assert_eq!(field("achieved_per_s"), "199.80");
        assert_eq!(field("p50_ms"), "12.500");
        assert_eq!(field("p99_ms"), "45.000");
        assert_eq!(field("verdict"), "held");
        assert_eq!(field("orchestrator_cpu_cores"), "0.250");
        assert_eq!(field("orchestrator_peak_rss_mib"), "40.000");
        // Unread figures and processes not watched stay empty, not zero.
        assert_eq!(field("orchestrator_hwm_mib"), "");
        assert_eq!(field("inventory_cpu_cores"), "");
    }

    #[test]
    fn a_closed_run_has_a_concurrency_and_no_offered_rate() {
        let mut step = open_step();
        step.load = Load::Closed { concurrency: 32 };
        step.verdict = None;
        let header = csv_header(&[]);
        let record = csv_record(&step, &[]);
        let field = |name: &str| &record[header.iter().position(|h| h == name).unwrap()];
        assert_eq!(field("load"), "closed");
        assert_eq!(field("concurrency"), "32");
        assert_eq!(field("offered_per_s"), "");
        assert_eq!(field("verdict"), "");
    }
}
