//! The payment worker: serves charges and refunds through Stripe or the
//! payment simulator, and flips the rehearsed provider outage for operators.

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use saga_protocol::WorkerKind;
use saga_shared::config::{Environment, Source};
use saga_shared::service_config::ServiceConfig;
use workers::cli;
use workers::payment::stripe::{Stripe, StripeConfig};
use workers::payment::{ledger, outage, Payment, PaymentConfig, ProviderKind, Simulator, SCHEMA};
use workers::retention::Retention;

/// Payment commands spend their time waiting on the provider holding no
/// database connection, so a copy can have more in flight than its pool
/// has connections.
const DEFAULT_PAYMENT_PREFETCH: u16 = 64;

/// The subcommands of this worker beside the standard ones.
#[derive(Subcommand)]
enum Own {
    /// Show or switch the rehearsed provider outage
    #[command(long_about = "Show or switch the rehearsed provider outage.\n\n\
        While it is on, every charge and refund that needs the provider answers \
        transient (\"payment provider outage\"), in every copy of the worker. \
        Without an argument, prints whether it is on.")]
    Outage {
        /// `on` or `off`; omit to print the current state
        state: Option<Switch>,
    },
    /// Print the simulated provider's ledger as CSV, one line per saga
    #[command(
        long_about = "Print the simulated provider's ledger as CSV, one line per saga.\n\n\
        Columns: saga_id,charges,charged_cents,refunds,refunded_cents, counting the \
        approved charges and refunds the provider booked, in saga id order. This is the \
        provider's side, which the auditor reconciles with the payments and the sagas."
    )]
    Ledger,
}

#[derive(Clone, Copy, ValueEnum)]
enum Switch {
    On,
    Off,
}

const BINARY: cli::Binary = cli::Binary {
    about: "Payment worker of the checkout saga: charges and refunds, once per saga",
    long_about: "Payment worker of the checkout saga: charges and refunds, once per saga.\n\n\
        PAYMENT_PROVIDER=stripe charges through Stripe's API: payment methods are PaymentMethod \
        ids (pm_...) the storefront made with Stripe.js; STRIPE_SECRET_KEY (required), \
        STRIPE_API_BASE (default https://api.stripe.com), STRIPE_TIMEOUT_MS (default 10000), \
        STRIPE_CURRENCIES (comma-separated; unset: any); see docs/payments.md.\n\n\
        Otherwise the provider is a deterministic simulator chosen by payment method: sim_approve, \
        sim_decline, sim_transient_N (N transient failures, then approved), sim_slow_MS \
        (approved after MS milliseconds, at most 60 s), sim_down (always transient). It is a \
        test double: the sim_* methods work only with PAYMENT_PROVIDER=simulator, and are \
        refused invalid_payment_method otherwise.\n\n\
        With no subcommand it serves: it consumes payment commands from RabbitMQ until \
        SIGTERM or ctrl-c. Environment: DATABASE_URL, AMQP_URL, AMQP_CA_FILE, AMQP_PREFIX, PREFETCH \
        (default 64 here: a charge waits on the provider holding no connection), \
        DATABASE_POOL_SIZE, SHUTDOWN_GRACE_SECONDS, MIGRATE_ON_START (false: only check the schema; see migrate), MIGRATE_LOCK_TIMEOUT, MIGRATE_STATEMENT_TIMEOUT, PAYMENT_MAX_AMOUNT_CENTS (largest charge, \
        default 100000000; larger or non-positive amounts are rejected invalid_amount), \
        PAYMENT_PROVIDER (stripe, simulator, or unset), PAYMENT_FAILPOINT (tests only), RUST_LOG, OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_SERVICE_NAME (traces over OTLP http/protobuf, off when unset). The operator subcommands need only DATABASE_URL.",
    schema: &SCHEMA,
};

#[tokio::main]
async fn main() -> ExitCode {
    BINARY.run(serve, own).await
}

/// Runs one of this worker's own operator subcommands.
async fn own(action: Own) -> ExitCode {
    match action {
        Own::Ledger => {
            cli::operator(&SCHEMA, |pool| async move {
                let mut csv =
                    String::from("saga_id,charges,charged_cents,refunds,refunded_cents\n");
                for line in ledger(&pool).await? {
                    csv.push_str(&format!(
                        "{},{},{},{},{}\n",
                        line.saga_id,
                        line.charges,
                        line.charged_cents,
                        line.refunds,
                        line.refunded_cents
                    ));
                }
                cli::write_stdout(csv.as_bytes())
            })
            .await
        }
        Own::Outage { state } => {
            cli::operator(&SCHEMA, |pool| async move {
                let mut conn = pool.acquire().await?;
                if let Some(state) = state {
                    outage::set(&mut conn, matches!(state, Switch::On)).await?;
                }
                let on = outage::is_on(&mut conn).await?;
                println!("payment provider outage: {}", if on { "on" } else { "off" });
                Ok(())
            })
            .await
        }
    }
}

async fn serve() -> ExitCode {
    let (mut service, payment, retention) = match ServiceConfig::from_env().and_then(|service| {
        Ok((
            service,
            PaymentConfig::from_source(&Environment)?,
            Retention::from_source(&Environment, WorkerKind::Payment)?,
        ))
    }) {
        Ok(configs) => configs,
        Err(error) => return cli::config_error(error),
    };
    if Environment
        .get("PREFETCH")
        .is_none_or(|v| v.trim().is_empty())
    {
        service.prefetch = DEFAULT_PAYMENT_PREFETCH;
    }
    if payment.provider == ProviderKind::Stripe {
        let (stripe, client) = match StripeConfig::from_source(&Environment)
            .and_then(|stripe| stripe.client().map(|client| (stripe, client)))
        {
            Ok(configured) => configured,
            Err(error) => return cli::config_error(error),
        };
        tracing::info!(api_base = %stripe.api_base, "charging through Stripe");
        return cli::exit_code(
            cli::serve(service, retention, &SCHEMA, |pool| {
                let provider = Stripe::new(client, pool, stripe.currencies);
                #[cfg(feature = "failpoints")]
                let provider = provider.with_failpoint(payment.failpoint);
                Payment::with_config(provider, payment)
            })
            .await,
        );
    }
    if !payment.simulator() {
        tracing::warn!("PAYMENT_PROVIDER is not `simulator`: the sim_* payment methods are refused invalid_payment_method");
    }
    cli::exit_code(
        cli::serve(service, retention, &SCHEMA, |pool| {
            Payment::with_config(Simulator::new(pool), payment)
        })
        .await,
    )
}
