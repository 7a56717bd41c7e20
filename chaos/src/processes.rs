//! The service processes this run starts: each is one of a fixed set of
//! slots (`orchestrator-a`, `payment-b`, ...) that is started, SIGKILLed and
//! started again; every incarnation logs to its own file, so the log of a
//! process that died is never mixed with the one that replaced it.
//!
//! A process that exits without being killed is a finding (the design says
//! every process survives broker and database restarts), so it is recorded
//! with the end of its log, and started again as a supervisor would.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::process::{Child, Command};

use crate::events::event;

/// One kind of process and how to run it.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The slot's name, e.g. `orchestrator-a`.
    pub name: String,
    pub binary: PathBuf,
    pub env: Vec<(String, String)>,
}

#[derive(Debug)]
struct Slot {
    spec: Spec,
    incarnation: u32,
    child: Option<Child>,
    log: PathBuf,
    kills: u32,
}

/// A process that ended without being told to.
#[derive(Debug, Clone)]
pub struct UnexpectedExit {
    pub name: String,
    pub status: String,
    pub log: PathBuf,
    pub last_lines: Vec<String>,
}

#[derive(Debug)]
pub struct Fleet {
    log_dir: PathBuf,
    slots: Vec<Slot>,
    unexpected: Vec<UnexpectedExit>,
    /// Set by [`Fleet::stop_all`]: nothing starts after it, whatever task
    /// was about to restart something.
    stopped: bool,
}

impl Fleet {
    pub fn new(log_dir: &Path, specs: Vec<Spec>) -> Fleet {
        Fleet {
            log_dir: log_dir.to_path_buf(),
            slots: specs
                .into_iter()
                .map(|spec| Slot {
                    spec,
                    incarnation: 0,
                    child: None,
                    log: PathBuf::new(),
                    kills: 0,
                })
                .collect(),
            unexpected: Vec::new(),
            stopped: false,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn name(&self, slot: usize) -> &str {
        &self.slots[slot].spec.name
    }

    /// Starts the slot's next incarnation (it must not be running).
    pub fn start(&mut self, slot: usize) -> anyhow::Result<()> {
        if self.stopped {
            anyhow::bail!(
                "the run is stopping: {} stays down",
                self.slots[slot].spec.name
            );
        }
        let entry = &mut self.slots[slot];
        assert!(
            entry.child.is_none(),
            "{} is already running",
            entry.spec.name
        );
        entry.incarnation += 1;
        entry.log = self
            .log_dir
            .join(format!("{}.{}.log", entry.spec.name, entry.incarnation));
        let log = File::create(&entry.log)
            .with_context(|| format!("cannot create {}", entry.log.display()))?;
        let mut command = Command::new(&entry.spec.binary);
        // The retry policy is the run's: a STEP_* left in the caller's shell
        // would change what "nothing parked" means.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("STEP_") {
                command.env_remove(key);
            }
        }
        command
            .envs(entry.spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a Ctrl-C at the terminal reaches only
            // this program, which then stops the services in order.
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches only the child.
        unsafe {
            command.pre_exec(|| {
                // If this program dies without cleaning up (SIGKILL), its
                // services die with it instead of running on, orphaned.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", entry.spec.binary.display()))?;
        entry.child = Some(child);
        Ok(())
    }

    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for slot in 0..self.slots.len() {
            self.start(slot)?;
        }
        Ok(())
    }

    /// SIGKILLs the slot's process and reaps it. Returns false if it was not
    /// running (it died on its own and is waiting to be restarted).
    pub async fn kill(&mut self, slot: usize) -> anyhow::Result<bool> {
        self.collect_exits();
        let entry = &mut self.slots[slot];
        let Some(mut child) = entry.child.take() else {
            return Ok(false);
        };
        if let Some(pid) = child.id() {
            signal(pid, libc::SIGKILL);
        }
        child.wait().await.context("cannot reap a killed process")?;
        entry.kills += 1;
        Ok(true)
    }

    /// Replaces the slot's process by `binary`, as a deploy does: SIGTERM
    /// (SIGKILL after `grace`), then the new binary with the same
    /// configuration. Returns how long the old process took to stop.
    pub async fn replace(
        &mut self,
        slot: usize,
        binary: PathBuf,
        grace: Duration,
    ) -> anyhow::Result<Duration> {
        self.collect_exits();
        let asked = Instant::now();
        if let Some(mut child) = self.slots[slot].child.take() {
            if let Some(pid) = child.id() {
                signal(pid, libc::SIGTERM);
            }
            if tokio::time::timeout(grace, child.wait()).await.is_err() {
                event!(
                    "{} did not stop within {grace:?} of SIGTERM: SIGKILL",
                    self.slots[slot].spec.name
                );
                if let Some(pid) = child.id() {
                    signal(pid, libc::SIGKILL);
                }
                child.wait().await.context("cannot reap a killed process")?;
                self.slots[slot].kills += 1;
            }
        }
        let stopped_after = asked.elapsed();
        self.slots[slot].spec.binary = binary;
        // The replacement runs as docs/upgrading.md has production run it:
        // only the deploy step (`migrate`) migrates; a new process checks
        // the schema it finds.
        let env = &mut self.slots[slot].spec.env;
        env.retain(|(name, _)| name != "MIGRATE_ON_START");
        env.push(("MIGRATE_ON_START".to_owned(), "false".to_owned()));
        self.start(slot)?;
        Ok(stopped_after)
    }

    /// Records (and prints) every process that exited on its own since the
    /// last call; returns the slots that are now down for that reason.
    pub fn collect_exits(&mut self) -> Vec<usize> {
        let mut ended = Vec::new();
        for (slot, entry) in self.slots.iter_mut().enumerate() {
            let Some(child) = entry.child.as_mut() else {
                continue;
            };
            let status = match child.try_wait() {
                Ok(Some(status)) => status.to_string(),
                Ok(None) => continue,
                Err(error) => format!("unknown ({error})"),
            };
            entry.child = None;
            let exit = UnexpectedExit {
                name: format!("{} (incarnation {})", entry.spec.name, entry.incarnation),
                status,
                log: entry.log.clone(),
                last_lines: tail(&entry.log, 15),
            };
            event!(
                "UNEXPECTED EXIT of {}: {}; last lines of {}:",
                exit.name,
                exit.status,
                exit.log.display()
            );
            for line in &exit.last_lines {
                eprintln!("    {line}");
            }
            self.unexpected.push(exit);
            ended.push(slot);
        }
        ended
    }

    /// Starts every slot that is down; returns their names.
    pub fn start_missing(&mut self) -> anyhow::Result<Vec<String>> {
        self.collect_exits();
        let mut started = Vec::new();
        for slot in 0..self.slots.len() {
            if self.slots[slot].child.is_none() {
                self.start(slot)?;
                started.push(self.slots[slot].spec.name.clone());
            }
        }
        Ok(started)
    }

    /// SIGTERM to all (they finish in-flight work and exit), SIGKILL to any
    /// still there after `grace`.
    pub async fn stop_all(&mut self, grace: Duration) {
        self.stopped = true;
        self.collect_exits();
        for entry in &self.slots {
            if let Some(pid) = entry.child.as_ref().and_then(Child::id) {
                signal(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        for entry in &mut self.slots {
            let Some(mut child) = entry.child.take() else {
                continue;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, child.wait()).await.is_err() {
                if let Some(pid) = child.id() {
                    signal(pid, libc::SIGKILL);
                }
                let _ = child.wait().await;
            }
        }
    }

    /// Kills per slot name, in slot order.
    pub fn kills(&self) -> Vec<(String, u32)> {
        self.slots
            .iter()
            .map(|entry| (entry.spec.name.clone(), entry.kills))
            .collect()
    }

    pub fn unexpected_exits(&self) -> &[UnexpectedExit] {
        &self.unexpected
    }
}

/// Only ever a pid this program spawned and has not reaped yet, so the pid
/// cannot have been reused by another process.
fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

fn tail(path: &Path, lines: usize) -> Vec<String> {
    let Ok(file) = File::open(path) else {
        return Vec::new();
    };
    let all: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
    all[all.len().saturating_sub(lines)..].to_vec()
}

/// Past this many unexpected exits the supervisor stops restarting: a crash
/// loop would only bury the first failure under thousands of log files.
const MAX_UNEXPECTED_EXITS: usize = 30;

/// Watches for processes that exit on their own, reports each with the end
/// of its log, and starts it again after a second. Runs until aborted.
pub async fn supervise(fleet: std::sync::Arc<tokio::sync::Mutex<Fleet>>) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ended = {
            let mut fleet = fleet.lock().await;
            let ended = fleet.collect_exits();
            let total = fleet.unexpected.len();
            if !ended.is_empty() && total > MAX_UNEXPECTED_EXITS {
                event!("{total} unexpected exits: no longer restarting anything");
                return;
            }
            ended
        };
        if ended.is_empty() {
            continue;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Only what is still down: a fault may have restarted it meanwhile.
        if let Err(error) = fleet.lock().await.start_missing() {
            event!("could not restart: {error:#}");
        }
    }
}
