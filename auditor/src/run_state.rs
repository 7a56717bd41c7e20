//! What the auditor keeps between runs, in files of its own (it writes to
//! no service's database): the watermark an incremental audit starts from,
//! and its last result as Prometheus metrics, for a node exporter's
//! textfile collector, so that a cron or sidecar audit every minute can be
//! alerted on.

use std::path::Path;

use chrono::{DateTime, Utc};

use crate::invariants::Invariant;
use crate::{Report, Scope};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path} holds no watermark (an RFC 3339 time): {text:?}")]
    Unreadable { path: String, text: String },
}

/// The scope the watermark at `path` asks for: what changed since it, or a
/// full audit when there is none yet.
pub fn scope_from(path: &Path) -> Result<Scope, StateError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Scope::Full),
        Err(error) => {
            return Err(StateError::Io {
                path: path.display().to_string(),
                error,
            })
        }
    };
    DateTime::parse_from_rfc3339(text.trim())
        .map(|at| Scope::Since(at.with_timezone(&Utc)))
        .map_err(|_| StateError::Unreadable {
            path: path.display().to_string(),
            text: text.chars().take(60).collect(),
        })
}

/// Writes `contents` to `path` whole or not at all: a reader (the next run,
/// the node exporter) never sees half a file.
fn replace(path: &Path, contents: &str) -> Result<(), StateError> {
    let io = |error| StateError::Io {
        path: path.display().to_string(),
        error,
    };
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    std::fs::write(&partial, contents).map_err(io)?;
    std::fs::rename(&partial, path).map_err(io)
}

/// The next watermark: the audit's snapshot time. Only a clean audit moves
/// it, so a violation is found again at every run until it is fixed.
pub fn save_watermark(path: &Path, report: &Report) -> Result<(), StateError> {
    replace(
        path,
        &format!(
            "{}\n",
            report
                .as_of
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
        ),
    )
}

/// The last run's result as Prometheus text; `report` is `None` when the
/// audit could not read a database.
pub fn metrics_text(report: Option<&Report>, finished: DateTime<Utc>, seconds: f64) -> String {
    let mut out = String::new();
    out.push_str(
        "# HELP checkout_audit_success Whether the last audit read every database (1) or not (0).\n\
         # TYPE checkout_audit_success gauge\n",
    );
    out.push_str(&format!(
        "checkout_audit_success {}\n",
        u8::from(report.is_some())
    ));
    out.push_str(
        "# HELP checkout_audit_last_run_timestamp_seconds When the last audit finished.\n\
         # TYPE checkout_audit_last_run_timestamp_seconds gauge\n",
    );
    out.push_str(&format!(
        "checkout_audit_last_run_timestamp_seconds {}\n",
        finished.timestamp()
    ));
    out.push_str(
        "# HELP checkout_audit_duration_seconds How long the last audit took.\n\
         # TYPE checkout_audit_duration_seconds gauge\n",
    );
    out.push_str(&format!("checkout_audit_duration_seconds {seconds:.3}\n"));
    let Some(report) = report else {
        return out;
    };
    let scope = match report.scope {
        Scope::Full => "full",
        Scope::Since(_) => "incremental",
    };
    out.push_str(
        "# HELP checkout_audit_sagas Sagas the last audit checked.\n\
         # TYPE checkout_audit_sagas gauge\n",
    );
    out.push_str(&format!(
        "checkout_audit_sagas{{scope=\"{scope}\"}} {}\n",
        report.summary.sagas
    ));
    out.push_str(
        "# HELP checkout_audit_violations Violations the last audit found, by invariant.\n\
         # TYPE checkout_audit_violations gauge\n",
    );
    for invariant in Invariant::ALL {
        let found = report
            .violations
            .iter()
            .filter(|v| v.invariant == invariant)
            .count();
        out.push_str(&format!(
            "checkout_audit_violations{{invariant=\"{}\"}} {found}\n",
            invariant.name()
        ));
    }
    out
}

pub fn save_metrics(path: &Path, text: &str) -> Result<(), StateError> {
    replace(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Summary;

    fn folder() -> std::path::PathBuf {
        let folder = std::env::temp_dir().join(format!("audit-state-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&folder).unwrap();
        folder
    }

    #[test]
    fn no_watermark_means_a_full_audit_and_a_saved_one_is_read_back() {
        let folder = folder();
        let path = folder.join("watermark");
        assert_eq!(scope_from(&path).unwrap(), Scope::Full);
        let report = Report {
            violations: Vec::new(),
            summary: Summary::default(),
            notes: Vec::new(),
            as_of: Utc::now(),
            scope: Scope::Full,
        };
        save_watermark(&path, &report).unwrap();
        assert_eq!(scope_from(&path).unwrap(), Scope::Since(report.as_of));
        std::fs::write(&path, "yesterday").unwrap();
        let error = scope_from(&path).unwrap_err().to_string();
        assert!(
            error.contains("watermark") && error.contains("yesterday"),
            "{error}"
        );
        std::fs::remove_dir_all(folder).unwrap();
    }

    #[test]
    fn the_metrics_name_every_invariant_and_say_when_a_run_failed() {
        let report = Report {
            violations: Vec::new(),
            summary: Summary {
                sagas: 7,
                ..Summary::default()
            },
            notes: Vec::new(),
            as_of: Utc::now(),
            scope: Scope::Since(Utc::now()),
        };
        let text = metrics_text(Some(&report), Utc::now(), 1.5);
        assert!(text.contains("checkout_audit_success 1\n"), "{text}");
        assert!(
            text.contains("checkout_audit_sagas{scope=\"incremental\"} 7\n"),
            "{text}"
        );
        for invariant in Invariant::ALL {
            let line = format!(
                "checkout_audit_violations{{invariant=\"{}\"}} 0\n",
                invariant.name()
            );
            assert!(text.contains(&line), "{text}");
        }
        let failed = metrics_text(None, Utc::now(), 0.2);
        assert!(failed.contains("checkout_audit_success 0\n"), "{failed}");
        assert!(!failed.contains("checkout_audit_violations"), "{failed}");
    }
}
