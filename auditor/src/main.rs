//! `auditor`: prints every invariant violation across the service databases;
//! the exit code says whether there was any (see `--help`).

use std::process::ExitCode;

use auditor::{run_state, Config, Scope, Sources};
use clap::Parser;

const VIOLATIONS: u8 = 1;
const CONFIGURATION: u8 = 2;
const UNREADABLE: u8 = 3;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_args(auditor::config::Args::parse()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("auditor: {error}");
            return ExitCode::from(CONFIGURATION);
        }
    };
    let stripe = match config.stripe.as_ref().map(|stripe| {
        stripe.client().map(|client| auditor::stripe::StripeAudit {
            client,
            cancel_orphans: stripe.cancel_orphans,
        })
    }) {
        None => None,
        Some(Ok(stripe)) => Some(stripe),
        Some(Err(error)) => {
            eprintln!("auditor: {error}");
            return ExitCode::from(CONFIGURATION);
        }
    };
    let scope = match config.watermark.as_deref().map(run_state::scope_from) {
        None => Scope::Full,
        Some(Ok(scope)) => scope,
        Some(Err(error)) => {
            eprintln!("auditor: AUDIT_WATERMARK_FILE (or --watermark): {error}");
            return ExitCode::from(CONFIGURATION);
        }
    };
    let started = std::time::Instant::now();
    let report = match Sources::connect(&config).await {
        Ok(sources) => auditor::audit::run(&sources, stripe.as_ref(), scope).await,
        Err(error) => Err(error),
    };
    if let Some(path) = &config.metrics_file {
        let text = run_state::metrics_text(
            report.as_ref().ok(),
            chrono::Utc::now(),
            started.elapsed().as_secs_f64(),
        );
        if let Err(error) = run_state::save_metrics(path, &text) {
            eprintln!("auditor: AUDIT_METRICS_FILE (or --metrics-file): {error}");
        }
    }
    match report {
        Ok(report) => {
            print!("{report}");
            if !report.is_clean() {
                return ExitCode::from(VIOLATIONS);
            }
            if let Some(path) = &config.watermark {
                if let Err(error) = run_state::save_watermark(path, &report) {
                    eprintln!("auditor: AUDIT_WATERMARK_FILE (or --watermark): {error}");
                    return ExitCode::from(CONFIGURATION);
                }
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            // The database's own words are in the source; sqlx repeats them
            // further down the chain, so one level is enough.
            match std::error::Error::source(&error) {
                Some(source) => eprintln!("auditor: {error}: {source}"),
                None => eprintln!("auditor: {error}"),
            }
            ExitCode::from(UNREADABLE)
        }
    }
}
