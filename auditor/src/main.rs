//! `auditor`: prints every invariant violation across the service databases;
//! the exit code says whether there was any (see `--help`).

use std::process::ExitCode;

use auditor::{audit_with, Config, Sources};
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
    let report = match Sources::connect(&config).await {
        Ok(sources) => audit_with(&sources, stripe.as_ref()).await,
        Err(error) => Err(error),
    };
    match report {
        Ok(report) => {
            print!("{report}");
            if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(VIOLATIONS)
            }
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
