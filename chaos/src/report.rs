//! What the run did and found, judged: the figures it prints and the list of
//! failures that decides its exit code.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use uuid::Uuid;

use crate::api::{Lookup, Posted};
use crate::checks::{Audit, Drain, SagaRow};
use crate::driver::Driving;
use crate::faults::Restart;
use crate::processes::UnexpectedExit;
use crate::upgrade::{self, Cost, Roll};
use crate::workload::Kind;

/// How the run was set up, for the heading.
#[derive(Debug, Clone)]
pub struct Plan {
    pub run_id: String,
    pub run_dir: String,
    pub seed: u64,
    pub checkouts: usize,
    pub span: Duration,
    pub concurrency: usize,
    pub processes: usize,
    pub service_restarts: bool,
    /// On the cluster of `scripts/cluster` rather than this machine's servers.
    pub cluster: bool,
}

/// What the chaos did to the processes and servers: gathered once, and
/// reported as it was.
#[derive(Debug)]
pub struct Disruption {
    pub chaos_lasted: Duration,
    pub kills: Vec<(String, u32)>,
    pub restarts: Vec<Restart>,
    pub unexpected_exits: Vec<UnexpectedExit>,
}

/// Everything gathered after the drain, before it is judged.
pub struct Evidence {
    pub disruption: Disruption,
    pub driving: Driving,
    pub drain: Drain,
    pub sagas: Vec<SagaRow>,
    pub lookups: HashMap<Uuid, Lookup>,
    pub timeline: Vec<(String, i64)>,
    pub dead_letters: Option<Vec<(String, i64)>>,
    pub audit: Audit,
    /// A rolling upgrade's steps and cost (`--upgrade-from`).
    pub roll: Option<(Roll, Option<Cost>)>,
}

#[derive(Debug)]
pub struct Report {
    pub plan: Plan,
    pub machine: String,
    pub disruption: Disruption,
    pub driven: usize,
    pub not_started: usize,
    pub accepted: usize,
    /// Accepted only after more than one POST (a retry with the same key).
    pub accepted_after_retry: usize,
    /// Each checkout never accepted: key, POSTs tried, the last error.
    pub refused: Vec<(String, u32, String)>,
    /// Refused, yet the database has a saga for the key: an answer was lost.
    pub refused_but_created: usize,
    /// A 4xx to our own request: a bug of this tool or of the API.
    pub invalid: Vec<String>,
    pub outcomes: BTreeMap<String, usize>,
    /// kind -> outcome -> count, for outcomes other than the kind's expected one.
    pub unexpected_outcomes: BTreeMap<Kind, BTreeMap<String, usize>>,
    pub drain: Drain,
    pub lost: Vec<Uuid>,
    /// Checkouts no orchestrator would show (neither 200 nor 404): id and error.
    pub unanswered: Vec<String>,
    pub stuck: Vec<String>,
    pub doubled: Vec<String>,
    /// Timeline events by kind: how much retrying the faults caused.
    pub timeline: Vec<(String, i64)>,
    pub dead_letters: Option<Vec<(String, i64)>>,
    pub audit: Audit,
    pub roll: Option<(Roll, Option<Cost>)>,
    /// Sagas parked (suspended) after the drain.
    pub parked: usize,
}

impl Report {
    pub fn judge(plan: Plan, evidence: Evidence) -> Report {
        let sagas = &evidence.sagas;
        let by_key: HashMap<&str, &SagaRow> = sagas
            .iter()
            .filter_map(|row| Some((row.idempotency_key.as_deref()?, row)))
            .collect();
        let by_id: HashMap<Uuid, &SagaRow> = sagas.iter().map(|row| (row.id, row)).collect();

        let mut report = Report {
            plan,
            machine: machine(),
            disruption: evidence.disruption,
            driven: evidence.driving.driven.len(),
            not_started: evidence.driving.not_started,
            accepted: 0,
            accepted_after_retry: 0,
            refused: Vec::new(),
            refused_but_created: 0,
            invalid: Vec::new(),
            outcomes: BTreeMap::new(),
            unexpected_outcomes: BTreeMap::new(),
            drain: evidence.drain,
            lost: Vec::new(),
            unanswered: Vec::new(),
            stuck: Vec::new(),
            doubled: Vec::new(),
            timeline: evidence.timeline,
            dead_letters: evidence.dead_letters,
            audit: evidence.audit,
            roll: evidence.roll,
            parked: 0,
        };

        let mut our_keys: HashSet<&str> = HashSet::new();
        for driven in &evidence.driving.driven {
            let key = driven.planned.key.as_str();
            our_keys.insert(key);
            let id = match &driven.posted {
                Posted::Accepted { id, attempts } => {
                    report.accepted += 1;
                    report.accepted_after_retry += usize::from(*attempts > 1);
                    *id
                }
                Posted::Refused {
                    attempts,
                    last_error,
                } => {
                    report
                        .refused
                        .push((key.to_owned(), *attempts, last_error.clone()));
                    report.refused_but_created += usize::from(by_key.contains_key(key));
                    continue;
                }
                Posted::Invalid { status, body } => {
                    report.invalid.push(format!("{key}: {status} {body}"));
                    continue;
                }
            };
            // One key, one saga: the one the client was told about.
            match by_key.get(key) {
                Some(row) if row.id == id => {}
                Some(row) => report.doubled.push(format!(
                    "key {key}: the client was given {id}, the database holds {}",
                    row.id
                )),
                None => report.doubled.push(format!(
                    "key {key}: the client was given {id}, the database has no saga for the key"
                )),
            }
            let outcome = report.outcome(id, &evidence.lookups, &by_id);
            if outcome != driven.planned.kind.expected() {
                *report
                    .unexpected_outcomes
                    .entry(driven.planned.kind)
                    .or_default()
                    .entry(outcome.clone())
                    .or_default() += 1;
            }
            *report.outcomes.entry(outcome).or_default() += 1;
        }
        let probe_ids: HashSet<Uuid> = report
            .disruption
            .restarts
            .iter()
            .filter_map(|r| r.probe)
            .collect();
        for probe in &probe_ids {
            // The probes must not be lost either; their outcome is in the
            // restart's line.
            let _ = report.outcome(*probe, &evidence.lookups, &by_id);
        }
        for row in sagas {
            let ours = row
                .idempotency_key
                .as_deref()
                .is_some_and(|key| our_keys.contains(key));
            if !ours && !probe_ids.contains(&row.id) {
                report.doubled.push(format!(
                    "saga {} (key {:?}) was created by no request of this run",
                    row.id, row.idempotency_key
                ));
            }
            if row.is_in_flight() {
                report.stuck.push(row.describe());
            }
            report.parked += usize::from(row.status == "suspended");
        }
        report
    }

    /// The outcome label of an accepted checkout (recording it as lost or
    /// unanswered when it is).
    fn outcome(
        &mut self,
        id: Uuid,
        lookups: &HashMap<Uuid, Lookup>,
        by_id: &HashMap<Uuid, &SagaRow>,
    ) -> String {
        match lookups.get(&id) {
            Some(Lookup::Found(view)) if view.is_final() => view.label(),
            // Pending to a client: parked, or still in flight.
            Some(Lookup::Found(_)) => match by_id.get(&id) {
                Some(row) => row.status.clone(),
                None => "pending".to_owned(),
            },
            Some(Lookup::NotFound) => {
                self.lost.push(id);
                "LOST".to_owned()
            }
            Some(Lookup::Unanswered(error)) => {
                self.unanswered.push(format!("{id}: {error}"));
                "unanswered".to_owned()
            }
            None => {
                self.unanswered.push(format!("{id}: not looked up"));
                "unanswered".to_owned()
            }
        }
    }

    /// Why the run fails; empty when it passes.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        let mut fail = |count: usize, what: &str| {
            if count > 0 {
                failures.push(format!("{count} {what}"));
            }
        };
        fail(self.lost.len(), "lost (accepted, then 404)");
        fail(
            self.stuck.len(),
            "stuck (running or compensating after the drain)",
        );
        fail(self.audit.violations.len(), "auditor violations");
        fail(self.doubled.len(), "doubled or unexplained sagas");
        fail(
            self.unanswered.len(),
            "checkouts no orchestrator would show",
        );
        fail(
            self.disruption.unexpected_exits.len(),
            "processes exited on their own",
        );
        fail(self.invalid.len(), "requests answered 4xx");
        fail(
            self.disruption
                .restarts
                .iter()
                .filter(|r| r.failure.is_some())
                .count(),
            "server faults not recovered from",
        );
        if !self.audit.ran() {
            failures.push(format!("the auditor did not run: {}", self.audit.summary));
        }
        // A roll is not a fault: it must cost nothing a client or support
        // would see.
        if let Some((roll, _)) = &self.roll {
            if let Some(failure) = &roll.failure {
                failures.push(format!("the roll failed: {failure}"));
            }
            let dead: i64 = self.dead_letters.iter().flatten().map(|(_, n)| n).sum();
            let unexpected: usize = self
                .unexpected_outcomes
                .values()
                .flat_map(|outcomes| outcomes.values())
                .sum();
            for (count, what) in [
                (dead as usize, "dead letters"),
                (self.parked, "parked (suspended) sagas"),
                (
                    unexpected,
                    "checkouts with another outcome than their kind's",
                ),
                (self.refused.len(), "checkouts never accepted"),
            ] {
                if count > 0 {
                    failures.push(format!("{count} {what}"));
                }
            }
        }
        failures
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.plan;
        writeln!(f, "== chaos run {} (seed {}) ==", p.run_id, p.seed)?;
        writeln!(f, "machine: {}", self.machine)?;
        writeln!(
            f,
            "plan: {} checkouts paced over {} s, {} in flight at most, {} processes, server faults {}",
            p.checkouts,
            p.span.as_secs(),
            p.concurrency,
            p.processes,
            if p.service_restarts { "on" } else { "off" }
        )?;
        writeln!(
            f,
            "servers: {}",
            if p.cluster {
                "the cluster of scripts/cluster (three RabbitMQ nodes, a PostgreSQL primary and synchronous standby)"
            } else {
                "this machine's PostgreSQL and RabbitMQ"
            }
        )?;
        writeln!(f, "logs: {}", p.run_dir)?;
        writeln!(f, "chaos lasted {}", seconds(self.disruption.chaos_lasted))?;
        if let Some((roll, cost)) = &self.roll {
            writeln!(f)?;
            for line in upgrade::describe(roll, cost.as_ref()) {
                writeln!(f, "{line}")?;
            }
        }

        let total: u32 = self.disruption.kills.iter().map(|(_, n)| n).sum();
        writeln!(f, "\nSIGKILLs: {total}")?;
        for (name, count) in &self.disruption.kills {
            writeln!(f, "  {name:<16} {count}")?;
        }
        if p.service_restarts {
            writeln!(f, "\nserver faults (times from the fault's command):")?;
            if self.disruption.restarts.is_empty() {
                writeln!(f, "  none (the chaos ended before the first was due)")?;
            }
            if p.cluster {
                writeln!(
                    f,
                    "  (a RabbitMQ node's probe is posted while the node is down; \
                     \"answering\" is when the node is back)"
                )?;
            }
            for r in &self.disruption.restarts {
                let back = r.back_after.map(seconds).unwrap_or("-".into());
                let recovered = r.recovered_after.map(seconds).unwrap_or("-".into());
                write!(
                    f,
                    "  {:<19} at {:6.1} s: answering after {back}, probe checkout completed after {recovered}",
                    r.server, r.at_seconds
                )?;
                match &r.failure {
                    Some(failure) => writeln!(f, "  NOT RECOVERED: {failure}")?,
                    None => writeln!(f)?,
                }
            }
        }
        writeln!(
            f,
            "\nprocesses that exited on their own: {}",
            self.disruption.unexpected_exits.len()
        )?;
        for exit in &self.disruption.unexpected_exits {
            writeln!(
                f,
                "  {}: {} ({})",
                exit.name,
                exit.status,
                exit.log.display()
            )?;
            for line in exit.last_lines.iter().rev().take(3).rev() {
                writeln!(f, "      {line}")?;
            }
        }

        writeln!(
            f,
            "\ncheckouts: {} planned, {} driven, {} not started (the chaos ended first)",
            p.checkouts, self.driven, self.not_started
        )?;
        writeln!(
            f,
            "  accepted {} ({} only after a retried POST with the same key)",
            self.accepted, self.accepted_after_retry
        )?;
        writeln!(
            f,
            "  refused {} (never accepted within 60 s of retries; {} of them created all the same)",
            self.refused.len(),
            self.refused_but_created
        )?;
        for (key, attempts, error) in self.refused.iter().take(10) {
            writeln!(f, "    {key}: {attempts} POSTs, the last: {error}")?;
        }
        for line in self.invalid.iter().take(10) {
            writeln!(f, "  4xx: {line}")?;
        }
        writeln!(f, "  final outcomes of the accepted ones:")?;
        for (outcome, count) in &self.outcomes {
            writeln!(f, "    {outcome:<32} {count}")?;
        }
        if !self.unexpected_outcomes.is_empty() {
            writeln!(f, "  outcomes other than the expected one for the kind:")?;
            for (kind, outcomes) in &self.unexpected_outcomes {
                for (outcome, count) in outcomes {
                    writeln!(
                        f,
                        "    {kind:<14} expected {:<26} got {outcome:<26} {count}",
                        kind.expected()
                    )?;
                }
            }
        }

        let events: Vec<String> = self
            .timeline
            .iter()
            .map(|(event, count)| format!("{event} {count}"))
            .collect();
        writeln!(f, "  saga timeline events: {}", events.join(", "))?;
        match &self.dead_letters {
            Some(reasons) => {
                let total: i64 = reasons.iter().map(|(_, n)| n).sum();
                writeln!(f, "  dead-lettered messages: {total}")?;
                for (reason, count) in reasons {
                    writeln!(f, "    {count:>6}  {reason}")?;
                }
            }
            None => writeln!(f, "  dead-lettered messages: (no dead_letters table)")?,
        }

        writeln!(
            f,
            "\ndrain: {} until no saga was running or compensating{}",
            seconds(self.drain.took),
            if self.drain.left > 0 {
                format!(" (gave up with {} left)", self.drain.left)
            } else {
                String::new()
            }
        )?;
        writeln!(
            f,
            "lost: {}   stuck: {}   doubled: {}   violations: {}",
            self.lost.len(),
            self.stuck.len(),
            self.doubled.len(),
            self.audit.violations.len()
        )?;
        for id in self.lost.iter().take(10) {
            writeln!(f, "  LOST {id}")?;
        }
        for line in self.unanswered.iter().take(10) {
            writeln!(f, "  UNANSWERED {line}")?;
        }
        for line in self.stuck.iter().take(10) {
            writeln!(f, "  STUCK {line}")?;
        }
        for line in self.doubled.iter().take(10) {
            writeln!(f, "  DOUBLED {line}")?;
        }
        writeln!(f, "auditor: {}", self.audit.summary)?;
        for line in self.audit.violations.iter().take(50) {
            writeln!(f, "  {line}")?;
        }
        if self.audit.violations.len() > 50 {
            writeln!(f, "  ... {} more", self.audit.violations.len() - 50)?;
        }

        let failures = self.failures();
        if failures.is_empty() {
            writeln!(f, "\nPASS")
        } else {
            writeln!(f, "\nFAIL: {}", failures.join("; "))
        }
    }
}

/// Cores, memory and kernel: the figures mean little without them.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let kib: f64 = text
                .lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some(format!("{:.0} GiB", kib / 1_048_576.0))
        })
        .unwrap_or_else(|| "? GiB".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!("{cores} cores, {memory}, Linux {kernel}")
}
