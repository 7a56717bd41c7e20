//! The command line: what sagactl takes, its help and its exit codes.

use clap::builder::NonEmptyStringValueParser;
use clap::{Args, Parser, Subcommand};
use reqwest::Url;
use serde_json::{json, Map, Value};
use uuid::Uuid;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  2  usage error (unknown command, bad or missing argument)
  3  not found: no saga with that id (HTTP 404)
  4  conflict: the saga's state does not allow that action (HTTP 409)
  5  unauthorized: no token, or a token the server does not accept (HTTP 401)
  6  invalid request: the server refused a parameter (HTTP 400, 413, 415, 422)
  7  server unavailable or unreachable (connection error, timeout, HTTP 5xx)
  1  anything else (an answer sagactl does not understand)

On an error sagactl prints one line to stderr:
  sagactl: <problem title>: <problem detail>";

const ABOUT: &str = "Support tool for checkout sagas: find them, read their \
timelines, retry or cancel them.";

const LONG_ABOUT: &str = "Support tool for checkout sagas: find them, read \
their timelines, retry or cancel them, alone or in bulk.

It talks to the orchestrator's support API (/v1/admin/) with a support \
bearer token; the token's name on the server is the actor recorded in the \
timeline for every retry and cancel. Pass the token in SAGACTL_TOKEN rather \
than --token: a command line is visible to other users of the machine.";

#[derive(Parser)]
#[command(
    name = "sagactl",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = EXIT_CODES,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

// No `Debug` derive here or on `Cli`: it would print the token.
#[derive(Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Base URL of the orchestrator.
    #[arg(
        long,
        global = true,
        env = "SAGACTL_URL",
        default_value = "http://127.0.0.1:8080",
        value_parser = base_url
    )]
    pub url: Url,
    /// Support bearer token (required; prefer the environment variable).
    #[arg(long, global = true, env = "SAGACTL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the server's JSON answer instead of the readable form.
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up on an answer after this many seconds.
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 60)]
    pub timeout: u64,
}

#[derive(Subcommand)]
pub enum Command {
    /// List sagas, newest first, a page at a time.
    #[command(after_help = EXIT_CODES)]
    List(ListArgs),
    /// Show one saga: its state, amounts, what support may do, its timeline.
    #[command(after_help = EXIT_CODES)]
    Show {
        /// The saga id (the checkout id).
        id: Uuid,
    },
    /// Re-run the action a suspended saga is parked on (a new series of attempts).
    #[command(after_help = EXIT_CODES)]
    Retry(ActionArgs),
    /// Cancel a saga: undo every step done so far; the checkout ends cancelled.
    ///
    /// Allowed for a running saga, or one suspended in the forward phase. The
    /// parked or in-flight step is undone too, whatever its outcome.
    #[command(after_help = EXIT_CODES)]
    Cancel(ActionArgs),
    /// Give a suspended saga more time before PARKED_SAGA_TTL cancels it
    /// with compensation.
    #[command(after_help = EXIT_CODES)]
    Extend(ExtendArgs),
    /// Suspended sagas grouped by step, phase and error, largest group first.
    #[command(after_help = EXIT_CODES)]
    Failures,
    /// Retry one failure group (--step, --error, --phase, exactly as
    /// `failures` shows them) or the sagas given by --saga-id.
    #[command(after_help = EXIT_CODES)]
    RetryAll(RetryAllArgs),
    /// Messages that could never be handled, newest first, with their saga and reason.
    #[command(after_help = EXIT_CODES)]
    DeadLetters(DeadLetterArgs),
    /// Commands the broker refused that still wait to be published, oldest first.
    #[command(after_help = EXIT_CODES)]
    Outbox(PageArgs),
    /// The checkout clients: their keys and limits.
    #[command(subcommand)]
    Clients(ClientsCommand),
    /// Sagas past their retention (RETENTION_DAYS), read back from the
    /// archive the orchestrator wrote them to.
    #[command(subcommand)]
    Archive(ArchiveCommand),
}

#[derive(Subcommand)]
pub enum ArchiveCommand {
    /// Show one archived saga: its stored row and its timeline. Reads the
    /// archive directly, not the orchestrator: exit code 3 if it is not there.
    #[command(after_help = EXIT_CODES)]
    Find {
        /// The saga id (the checkout id).
        id: Uuid,
        /// The orchestrator's ARCHIVE: a folder, or s3://BUCKET[/PREFIX]
        /// (with the usual AWS_* variables).
        #[arg(long, env = "ARCHIVE", default_value = "archive")]
        archive: String,
    },
}

#[derive(Subcommand)]
pub enum ClientsCommand {
    /// Create a client and print its key, once: only a digest is kept.
    #[command(after_help = EXIT_CODES)]
    Add {
        /// 1 to 64 of A-Z a-z 0-9 . _ -
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Every client, revoked ones too, with its limits and checkouts in flight.
    #[command(after_help = EXIT_CODES)]
    List,
    /// Set a client's own limits (those not given stay as they are).
    #[command(after_help = EXIT_CODES)]
    Set {
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Revoke a client: its key opens nothing any more (on every instance within seconds).
    #[command(after_help = EXIT_CODES)]
    Revoke { name: String },
}

#[derive(Args)]
pub struct LimitArgs {
    /// Checkouts per second, across all instances (default: CLIENT_RATE_PER_SECOND).
    #[arg(long, value_name = "N")]
    pub rate: Option<f64>,
    /// Checkouts at once above the rate (default: CLIENT_RATE_BURST).
    #[arg(long, value_name = "N")]
    pub burst: Option<u32>,
    /// Checkouts not yet final (default: CLIENT_MAX_IN_FLIGHT).
    #[arg(long, value_name = "N")]
    pub max_in_flight: Option<u32>,
}

impl LimitArgs {
    pub fn into_body(self, mut body: Map<String, Value>) -> Value {
        for (key, value) in [
            ("rate_per_second", self.rate.map(|n| json!(n))),
            ("rate_burst", self.burst.map(|n| json!(n))),
            ("max_in_flight", self.max_in_flight.map(|n| json!(n))),
        ] {
            if let Some(value) = value {
                body.insert(key.into(), value);
            }
        }
        Value::Object(body)
    }
}

/// The page of a list to show, as the outbox and the dead letters take it.
#[derive(Args)]
pub struct PageArgs {
    /// How many to show (1 to 500).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Where the previous page ended (printed under it).
    #[arg(long)]
    pub cursor: Option<String>,
}

impl PageArgs {
    pub fn query(self) -> [(&'static str, Option<String>); 2] {
        page_query(self.limit, self.cursor)
    }
}

/// The query parameters of a page of any support list.
pub fn page_query(
    limit: Option<u32>,
    cursor: Option<String>,
) -> [(&'static str, Option<String>); 2] {
    [("limit", limit.map(|n| n.to_string())), ("cursor", cursor)]
}

#[derive(Args)]
pub struct DeadLetterArgs {
    /// Only the dead letters of this saga.
    #[arg(long)]
    pub saga: Option<Uuid>,
    #[command(flatten)]
    pub page: PageArgs,
}

#[derive(Args)]
pub struct ListArgs {
    /// running, compensating, suspended, completed, compensated or cancelled.
    #[arg(long)]
    pub status: Option<String>,
    /// inventory.reserve, tax.calculate, payment.charge, inventory.release or payment.refund.
    #[arg(long)]
    pub step: Option<String>,
    /// forward or compensating (a suspended saga counts in the phase it parked in).
    #[arg(long)]
    pub phase: Option<String>,
    /// Case-insensitive text in the last error.
    #[arg(long, value_name = "TEXT")]
    pub error: Option<String>,
    /// Created at or after this RFC 3339 time (2026-11-25T10:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub created_after: Option<String>,
    /// Created before this RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    pub created_before: Option<String>,
    /// A checkout id, customer id or idempotency key: whichever it is (exact).
    #[arg(long, value_name = "TEXT")]
    pub search: Option<String>,
    /// Only this customer's sagas (exact).
    #[arg(long, value_name = "ID")]
    pub customer: Option<String>,
    /// Only the saga created with this Idempotency-Key (exact).
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Only this checkout client's sagas (exact).
    #[arg(long, value_name = "NAME")]
    pub client: Option<String>,
    /// Sagas per page, 1 to 500 (the server's default is 50).
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Where to start: the cursor the previous page printed.
    #[arg(long)]
    pub cursor: Option<String>,
}

#[derive(Args)]
pub struct ActionArgs {
    /// The saga id (the checkout id).
    pub id: Uuid,
    /// Why, for the saga's timeline (1 to 500 characters).
    #[arg(long, value_name = "TEXT", value_parser = NonEmptyStringValueParser::new())]
    pub reason: String,
}

#[derive(Args)]
pub struct ExtendArgs {
    /// The saga id (the checkout id).
    pub id: Uuid,
    /// How much longer: a whole number and a unit (ms, s, m, h, d), e.g. 24h.
    #[arg(long, value_name = "DURATION", value_parser = NonEmptyStringValueParser::new())]
    pub by: String,
    /// Why, for the saga's timeline (1 to 500 characters).
    #[arg(long, value_name = "TEXT", value_parser = NonEmptyStringValueParser::new())]
    pub reason: String,
}

#[derive(Args)]
#[command(group(
    clap::ArgGroup::new("selection")
        .required(true)
        .args(["step", "saga_ids"])
))]
pub struct RetryAllArgs {
    /// The group's step, as `failures` shows it.
    #[arg(long, requires = "error")]
    pub step: Option<String>,
    /// The group's phase: forward or compensating.
    #[arg(long, default_value = "forward", requires = "step")]
    pub phase: String,
    /// The group's error text, exactly as `failures` shows it (not a
    /// search: "" is the group parked without an error text).
    #[arg(long, value_name = "TEXT", requires = "step")]
    pub error: Option<String>,
    /// Retry these sagas instead of a group, e.g. the ids a dry run printed
    /// (comma-separated, or the option repeated).
    #[arg(
        long = "saga-id",
        value_name = "ID",
        value_delimiter = ',',
        conflicts_with_all = ["step", "phase", "error"]
    )]
    pub saga_ids: Vec<Uuid>,
    /// Only count and list the sagas that would be retried.
    #[arg(long)]
    pub dry_run: bool,
    /// Why, for each saga's timeline (required unless --dry-run).
    #[arg(
        long,
        value_name = "TEXT",
        required_unless_present = "dry_run",
        value_parser = NonEmptyStringValueParser::new()
    )]
    pub reason: Option<String>,
}

pub fn base_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err("must be an http:// or https:// URL".to_owned());
    }
    Ok(url)
}
