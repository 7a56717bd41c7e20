//! `sagactl`: the support API (docs/admin-api.md) from a terminal.
//!
//! A plain HTTP client of a running orchestrator, not of its database or
//! its library types: it works against any deployment, and reads answers
//! as loose JSON so a field the server adds later breaks nothing. The
//! readable form is for people; `--json` passes the server's body through
//! untouched for scripts, and the exit code says what kind of failure it
//! was, so a script never has to parse an error message.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::builder::NonEmptyStringValueParser;
use clap::{Args, Parser, Subcommand};
use reqwest::{Method, StatusCode, Url};
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
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

// No `Debug` derive here or on `Cli`: it would print the token.
#[derive(Args)]
#[command(next_help_heading = "Global options")]
struct Global {
    /// Base URL of the orchestrator.
    #[arg(
        long,
        global = true,
        env = "SAGACTL_URL",
        default_value = "http://127.0.0.1:8080",
        value_parser = base_url
    )]
    url: Url,
    /// Support bearer token (required; prefer the environment variable).
    #[arg(long, global = true, env = "SAGACTL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the server's JSON answer instead of the readable form.
    #[arg(long, global = true)]
    json: bool,
    /// Give up on an answer after this many seconds.
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 60)]
    timeout: u64,
}

#[derive(Subcommand)]
enum Command {
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
    Outbox(OutboxArgs),
    /// The checkout clients: their keys and limits.
    #[command(subcommand)]
    Clients(ClientsCommand),
}

#[derive(Subcommand)]
enum ClientsCommand {
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
struct LimitArgs {
    /// Checkouts per second, across all instances (default: CLIENT_RATE_PER_SECOND).
    #[arg(long, value_name = "N")]
    rate: Option<f64>,
    /// Checkouts at once above the rate (default: CLIENT_RATE_BURST).
    #[arg(long, value_name = "N")]
    burst: Option<u32>,
    /// Checkouts not yet final (default: CLIENT_MAX_IN_FLIGHT).
    #[arg(long, value_name = "N")]
    max_in_flight: Option<u32>,
}

impl LimitArgs {
    fn into_body(self, mut body: Map<String, Value>) -> Value {
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

#[derive(Args)]
struct OutboxArgs {
    /// How many to show (1 to 500).
    #[arg(long)]
    limit: Option<u32>,
    /// Where the previous page ended (printed under it).
    #[arg(long)]
    cursor: Option<String>,
}

#[derive(Args)]
struct DeadLetterArgs {
    /// Only the dead letters of this saga.
    #[arg(long)]
    saga: Option<Uuid>,
    /// How many to show (1 to 500).
    #[arg(long)]
    limit: Option<u32>,
    /// Where the previous page ended (printed under it).
    #[arg(long)]
    cursor: Option<String>,
}

#[derive(Args)]
struct ListArgs {
    /// running, compensating, suspended, completed, compensated or cancelled.
    #[arg(long)]
    status: Option<String>,
    /// inventory.reserve, tax.calculate, payment.charge, inventory.release or payment.refund.
    #[arg(long)]
    step: Option<String>,
    /// forward or compensating (a suspended saga counts in the phase it parked in).
    #[arg(long)]
    phase: Option<String>,
    /// Case-insensitive text in the last error.
    #[arg(long, value_name = "TEXT")]
    error: Option<String>,
    /// Created at or after this RFC 3339 time (2026-11-25T10:00:00Z).
    #[arg(long, value_name = "TIME")]
    created_after: Option<String>,
    /// Created before this RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    created_before: Option<String>,
    /// A checkout id, customer id or idempotency key: whichever it is (exact).
    #[arg(long, value_name = "TEXT")]
    search: Option<String>,
    /// Only this customer's sagas (exact).
    #[arg(long, value_name = "ID")]
    customer: Option<String>,
    /// Only the saga created with this Idempotency-Key (exact).
    #[arg(long, value_name = "KEY")]
    key: Option<String>,
    /// Only this checkout client's sagas (exact).
    #[arg(long, value_name = "NAME")]
    client: Option<String>,
    /// Sagas per page, 1 to 500 (the server's default is 50).
    #[arg(long, value_name = "N")]
    limit: Option<u32>,
    /// Where to start: the cursor the previous page printed.
    #[arg(long)]
    cursor: Option<String>,
}

#[derive(Args)]
struct ActionArgs {
    /// The saga id (the checkout id).
    id: Uuid,
    /// Why, for the saga's timeline (1 to 500 characters).
    #[arg(long, value_name = "TEXT", value_parser = NonEmptyStringValueParser::new())]
    reason: String,
}

#[derive(Args)]
struct ExtendArgs {
    /// The saga id (the checkout id).
    id: Uuid,
    /// How much longer: a whole number and a unit (ms, s, m, h, d), e.g. 24h.
    #[arg(long, value_name = "DURATION", value_parser = NonEmptyStringValueParser::new())]
    by: String,
    /// Why, for the saga's timeline (1 to 500 characters).
    #[arg(long, value_name = "TEXT", value_parser = NonEmptyStringValueParser::new())]
    reason: String,
}

#[derive(Args)]
#[command(group(
    clap::ArgGroup::new("selection")
        .required(true)
        .args(["step", "saga_ids"])
))]
struct RetryAllArgs {
    /// The group's step, as `failures` shows it.
    #[arg(long, requires = "error")]
    step: Option<String>,
    /// The group's phase: forward or compensating.
    #[arg(long, default_value = "forward", requires = "step")]
    phase: String,
    /// The group's error text, exactly as `failures` shows it (not a
    /// search: "" is the group parked without an error text).
    #[arg(long, value_name = "TEXT", requires = "step")]
    error: Option<String>,
    /// Retry these sagas instead of a group, e.g. the ids a dry run printed
    /// (comma-separated, or the option repeated).
    #[arg(
        long = "saga-id",
        value_name = "ID",
        value_delimiter = ',',
        conflicts_with_all = ["step", "phase", "error"]
    )]
    saga_ids: Vec<Uuid>,
    /// Only count and list the sagas that would be retried.
    #[arg(long)]
    dry_run: bool,
    /// Why, for each saga's timeline (required unless --dry-run).
    #[arg(
        long,
        value_name = "TEXT",
        required_unless_present = "dry_run",
        value_parser = NonEmptyStringValueParser::new()
    )]
    reason: Option<String>,
}

fn base_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err("must be an http:// or https:// URL".to_owned());
    }
    Ok(url)
}

/// Why a command failed, and the exit code that tells a script so.
#[derive(Debug)]
struct Failure {
    code: u8,
    title: String,
    detail: String,
}

impl Failure {
    fn new(code: u8, title: &str, detail: impl Into<String>) -> Self {
        Failure {
            code,
            title: title.to_owned(),
            detail: detail.into(),
        }
    }

    fn line(&self) -> String {
        format!("sagactl: {}: {}", clean(&self.title), clean(&self.detail))
    }

    /// An error answer; its RFC 9457 body when there is one, else what the
    /// status line says (a proxy in the way answers in HTML).
    fn from_answer(status: StatusCode, body: &str) -> Self {
        let code = match status.as_u16() {
            404 => 3,
            409 => 4,
            401 | 403 => 5,
            400 | 413 | 415 | 422 => 6,
            // Worth trying again later, like an outage.
            408 | 429 | 500..=599 => 7,
            _ => 1,
        };
        let problem: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let title = problem["title"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| status.to_string());
        let mut detail = problem["detail"].as_str().unwrap_or("").to_owned();
        // The server's detail already spells out its field errors today;
        // add only those it leaves out, so none is lost nor said twice.
        let missing: Vec<String> = problem["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| format!("{}: {}", text(&e["field"]), text(&e["message"])))
            .filter(|e| !detail.contains(e.as_str()))
            .collect();
        if !missing.is_empty() {
            detail = if detail.is_empty() {
                missing.join("; ")
            } else {
                format!("{detail} ({})", missing.join("; "))
            };
        }
        if detail.is_empty() {
            detail = if problem.is_null() && !body.trim().is_empty() {
                format!("the answer is not a problem body: {}", truncate(body, 120))
            } else {
                "no detail given".to_owned()
            };
        }
        Failure {
            code,
            title,
            detail,
        }
    }

    fn unreachable(url: &Url, error: &reqwest::Error, timeout: u64) -> Self {
        let why = if error.is_timeout() {
            format!("no answer within {timeout} s")
        } else {
            // reqwest's own message only repeats the URL; the innermost
            // cause says what went wrong (connection refused, no such host).
            let mut cause: &dyn std::error::Error = error;
            while let Some(inner) = cause.source() {
                cause = inner;
            }
            cause.to_string()
        };
        Failure::new(7, "Server unreachable", format!("{url}: {why}"))
    }
}

struct Request {
    method: Method,
    path: Vec<String>,
    query: Vec<(&'static str, String)>,
    body: Option<Value>,
}

impl Request {
    fn get(path: &[&str]) -> Self {
        Request {
            method: Method::GET,
            path: path.iter().map(|s| (*s).to_owned()).collect(),
            query: Vec::new(),
            body: None,
        }
    }

    fn post(path: &[&str], body: Value) -> Self {
        Request {
            method: Method::POST,
            body: Some(body),
            ..Request::get(path)
        }
    }

    fn patch(path: &[&str], body: Value) -> Self {
        Request {
            method: Method::PATCH,
            body: Some(body),
            ..Request::get(path)
        }
    }
}

struct Api {
    http: reqwest::Client,
    base: Url,
    token: String,
    timeout: u64,
}

impl Api {
    fn new(global: &Global) -> Result<Self, Failure> {
        let token = global.token.as_deref().map(str::trim).unwrap_or("");
        if token.is_empty() {
            return Err(Failure::new(
                5,
                "Unauthorized",
                "no token: set SAGACTL_TOKEN or pass --token",
            ));
        }
        // Checked here so the HTTP library never gets to word an error
        // about the header that holds the secret.
        if !token.chars().all(|c| c.is_ascii_graphic()) {
            return Err(Failure::new(
                5,
                "Unauthorized",
                "the token holds characters a bearer token cannot have",
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(global.timeout.clamp(1, 10)))
            .timeout(Duration::from_secs(global.timeout.max(1)))
            .user_agent(concat!("sagactl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::new(1, "Client setup failed", e.to_string()))?;
        Ok(Api {
            http,
            base: global.url.clone(),
            token: token.to_owned(),
            timeout: global.timeout.max(1),
        })
    }

    /// The route's URL under the base, each segment escaped, so the base
    /// may carry a path prefix (behind a proxy) and an id cannot reshape
    /// the path.
    fn url(&self, path: &[String]) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        url.path_segments_mut()
            .expect("base_url admits only URLs with a path")
            .pop_if_empty()
            .extend(path);
        url
    }

    /// The raw body of a 2xx answer, checked to be JSON.
    async fn send(&self, request: Request) -> Result<(String, Value), Failure> {
        let url = self.url(&request.path);
        let mut builder = self
            .http
            .request(request.method, url.clone())
            .bearer_auth(&self.token)
            .query(&request.query);
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        let response = builder
            .send()
            .await
            .map_err(|e| Failure::unreachable(&url, &e, self.timeout))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| Failure::unreachable(&url, &e, self.timeout))?;
        if !status.is_success() {
            return Err(Failure::from_answer(status, &body));
        }
        let value = serde_json::from_str(&body).map_err(|_| {
            Failure::new(
                1,
                "Unexpected answer",
                format!("{url} answered {status} without JSON; is --url the orchestrator?"),
            )
        })?;
        Ok((body, value))
    }
}

/// What to ask for, and how to show the answer to a person.
fn plan(command: Command) -> (Request, fn(&Value) -> String) {
    const SAGAS: [&str; 3] = ["v1", "admin", "sagas"];
    match command {
        Command::List(args) => {
            let mut request = Request::get(&SAGAS);
            let filters = [
                ("status", args.status),
                ("step", args.step),
                ("phase", args.phase),
                ("error", args.error),
                ("created_after", args.created_after),
                ("created_before", args.created_before),
                ("q", args.search),
                ("customer_id", args.customer),
                ("idempotency_key", args.key),
                ("client", args.client),
                ("limit", args.limit.map(|n| n.to_string())),
                ("cursor", args.cursor),
            ];
            request.query = filters
                .into_iter()
                .filter_map(|(key, value)| Some((key, value?)))
                .collect();
            (request, render_list)
        }
        Command::Show { id } => (
            Request::get(&[SAGAS[0], SAGAS[1], SAGAS[2], &id.to_string()]),
            render_saga,
        ),
        Command::Retry(args) => action("retry", args),
        Command::Cancel(args) => action("cancel", args),
        Command::Extend(args) => {
            let id = args.id.to_string();
            (
                Request::post(
                    &["v1", "admin", "sagas", &id, "extend-park"],
                    json!({"by": args.by, "reason": args.reason}),
                ),
                render_extended,
            )
        }
        Command::Failures => (Request::get(&["v1", "admin", "failures"]), render_failures),
        Command::DeadLetters(args) => {
            let mut request = Request::get(&["v1", "admin", "dead-letters"]);
            let filters = [
                ("saga_id", args.saga.map(|id| id.to_string())),
                ("limit", args.limit.map(|n| n.to_string())),
                ("cursor", args.cursor),
            ];
            request.query = filters
                .into_iter()
                .filter_map(|(key, value)| Some((key, value?)))
                .collect();
            (request, render_dead_letters)
        }
        Command::Outbox(args) => {
            let mut request = Request::get(&["v1", "admin", "outbox"]);
            let filters = [
                ("limit", args.limit.map(|n| n.to_string())),
                ("cursor", args.cursor),
            ];
            request.query = filters
                .into_iter()
                .filter_map(|(key, value)| Some((key, value?)))
                .collect();
            (request, render_outbox)
        }
        Command::Clients(command) => {
            const CLIENTS: [&str; 3] = ["v1", "admin", "clients"];
            match command {
                ClientsCommand::Add { name, limits } => {
                    let mut body = Map::new();
                    body.insert("name".into(), json!(name));
                    (
                        Request::post(&CLIENTS, limits.into_body(body)),
                        render_new_client,
                    )
                }
                ClientsCommand::List => (Request::get(&CLIENTS), render_clients),
                ClientsCommand::Set { name, limits } => (
                    Request::patch(
                        &[CLIENTS[0], CLIENTS[1], CLIENTS[2], &name],
                        limits.into_body(Map::new()),
                    ),
                    render_client,
                ),
                ClientsCommand::Revoke { name } => (
                    Request::post(
                        &[CLIENTS[0], CLIENTS[1], CLIENTS[2], &name, "revoke"],
                        json!({}),
                    ),
                    render_client,
                ),
            }
        }
        Command::RetryAll(args) => {
            let mut body = Map::new();
            if let Some(step) = args.step {
                body.insert("step".into(), json!(step));
                body.insert("phase".into(), json!(args.phase));
                body.insert("error".into(), json!(args.error.unwrap_or_default()));
            } else {
                body.insert("saga_ids".into(), json!(args.saga_ids));
            }
            if let Some(reason) = args.reason {
                body.insert("reason".into(), json!(reason));
            }
            body.insert("dry_run".into(), json!(args.dry_run));
            (
                Request::post(&["v1", "admin", "sagas", "retry"], Value::Object(body)),
                render_bulk,
            )
        }
    }
}

fn action(name: &str, args: ActionArgs) -> (Request, fn(&Value) -> String) {
    let id = args.id.to_string();
    (
        Request::post(
            &["v1", "admin", "sagas", &id, name],
            json!({"reason": args.reason}),
        ),
        render_acted,
    )
}

/// Server text made safe for one terminal cell: a control character (a
/// newline in an error, an escape sequence from a provider) would break
/// the layout or drive the terminal.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn truncate(text: &str, max: usize) -> String {
    let text = clean(text);
    if text.chars().count() <= max {
        return text;
    }
    let kept: String = text.chars().take(max - 1).collect();
    format!("{kept}…")
}

/// A JSON scalar as text; `-` for null or missing, so no cell is empty.
fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => clean(s),
        other => clean(&other.to_string()),
    }
}

fn list_of(value: &Value) -> String {
    let items: Vec<String> = value.as_array().into_iter().flatten().map(text).collect();
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

/// Times in UTC, to the second (or millisecond, where order within a
/// second matters); the server's text as is if it is not RFC 3339.
fn time(value: &Value, millis: bool) -> String {
    let Some(raw) = value.as_str() else {
        return text(value);
    };
    match DateTime::parse_from_rfc3339(raw) {
        Ok(t) => {
            let t = t.with_timezone(&Utc);
            let format = if millis {
                "%Y-%m-%d %H:%M:%S%.3fZ"
            } else {
                "%Y-%m-%d %H:%M:%SZ"
            };
            t.format(format).to_string()
        }
        Err(_) => clean(raw),
    }
}

/// Integer cents as `45.45 USD`, by integer arithmetic: a float would
/// print some amounts a cent off.
fn money(cents: &Value, currency: &Value) -> String {
    let Some(cents) = cents.as_i64() else {
        return "-".to_owned();
    };
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    let amount = format!("{sign}{}.{:02}", abs / 100, abs % 100);
    match currency.as_str() {
        Some(code) => format!("{amount} {}", clean(code)),
        None => amount,
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Columns padded to their widest cell; the last one is not, so no line
/// ends in spaces.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header_row).chain(rows) {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i == last {
                line.push_str(cell);
            } else {
                let pad = width - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn render_list(answer: &Value) -> String {
    let rows: Vec<Vec<String>> = answer["sagas"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|saga| {
            vec![
                text(&saga["saga_id"]),
                truncate(&text(&saga["customer_id"]), 24),
                text(&saga["status"]),
                text(&saga["step"]),
                text(&saga["attempt"]),
                money(&saga["total_cents"], &saga["currency"]),
                // The full error is one `show` away; a long one would push
                // the time off the screen.
                truncate(&text(&saga["last_error"]), 60),
                time(&saga["updated_at"], false),
            ]
        })
        .collect();
    let mut out = if rows.is_empty() {
        "no sagas match\n".to_owned()
    } else {
        table(
            &[
                "ID",
                "CUSTOMER",
                "STATUS",
                "STEP",
                "ATTEMPT",
                "TOTAL",
                "LAST ERROR",
                "UPDATED",
            ],
            &rows,
        )
    };
    if let Some(cursor) = answer["next_cursor"].as_str() {
        out.push_str(&format!(
            "more: repeat with --cursor {} for the next page\n",
            clean(cursor)
        ));
    }
    out
}

/// A final saga awaits no step; its leftover attempt count means nothing.
fn step_and_attempt(saga: &Value) -> String {
    if saga["step"].is_null() {
        return "-".to_owned();
    }
    format!(
        "{} (attempt {})",
        text(&saga["step"]),
        text(&saga["attempt"])
    )
}

fn render_saga(saga: &Value) -> String {
    let currency = &saga["currency"];
    let mut fields: Vec<(&str, String)> = vec![
        ("saga", text(&saga["saga_id"])),
        (
            "status",
            format!(
                "{} (checkout {})",
                text(&saga["status"]),
                text(&saga["checkout_status"])
            ),
        ),
        ("phase", text(&saga["phase"])),
        ("step", step_and_attempt(saga)),
        ("last error", text(&saga["last_error"])),
    ];
    // Set only once a saga ends (why it was rejected or cancelled).
    for key in ["reason", "detail"] {
        if !saga[key].is_null() {
            fields.push((key, text(&saga[key])));
        }
    }
    fields.push((
        "amounts",
        format!(
            "subtotal {}, tax {}, total {}",
            money(&saga["subtotal_cents"], currency),
            money(&saga["tax_cents"], currency),
            money(&saga["total_cents"], currency)
        ),
    ));
    if !saga["deadline_at"].is_null() {
        fields.push(("reply due", time(&saga["deadline_at"], false)));
    }
    fields.push(("created", time(&saga["created_at"], false)));
    fields.push(("updated", time(&saga["updated_at"], false)));
    fields.push((
        "pending compensations",
        list_of(&saga["pending_compensations"]),
    ));
    fields.push(("allowed actions", list_of(&saga["actions"])));

    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in &fields {
        out.push_str(&format!("{key:<width$}  {value}\n"));
    }
    out.push_str("\ntimeline:\n");
    let rows: Vec<Vec<String>> = saga["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            let mut note: Vec<String> = Vec::new();
            if !entry["detail"].is_null() {
                note.push(text(&entry["detail"]));
            }
            if !entry["actor"].is_null() {
                let mut by = format!("by {}", text(&entry["actor"]));
                if !entry["reason"].is_null() {
                    by.push_str(&format!(": {}", text(&entry["reason"])));
                }
                note.push(by);
            }
            // Saga-wide events (started, completed) have no step; their
            // attempt 0 means nothing.
            let attempt = if entry["step"].is_null() {
                "-".to_owned()
            } else {
                text(&entry["attempt"])
            };
            vec![
                time(&entry["at"], true),
                text(&entry["step"]),
                attempt,
                text(&entry["event"]),
                note.join("  "),
            ]
        })
        .collect();
    if rows.is_empty() {
        out.push_str("(empty)\n");
    } else {
        let timeline = table(&["TIME", "STEP", "ATTEMPT", "EVENT", "DETAIL"], &rows);
        for line in timeline.lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}

fn render_acted(saga: &Value) -> String {
    format!(
        "saga {} is now {} (checkout {})\n",
        text(&saga["saga_id"]),
        text(&saga["status"]),
        text(&saga["checkout_status"])
    )
}

fn render_extended(answer: &Value) -> String {
    let until = match &answer["park_expires_at"] {
        Value::Null => "parks never expire here (PARKED_SAGA_TTL=0)".to_owned(),
        at => format!("parked until {}", time(at, false)),
    };
    format!("saga {} {until}\n", text(&answer["saga_id"]))
}

fn render_failures(answer: &Value) -> String {
    let rows: Vec<Vec<String>> = answer["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|group| {
            vec![
                text(&group["count"]),
                text(&group["step"]),
                text(&group["phase"]),
                text(&group["error"]),
            ]
        })
        .collect();
    let total = answer["total"].as_u64().unwrap_or(0);
    if rows.is_empty() {
        return "no suspended sagas\n".to_owned();
    }
    let mut out = table(&["COUNT", "STEP", "PHASE", "ERROR"], &rows);
    out.push_str(&format!(
        "total: {}\n",
        plural(total, "suspended saga", "suspended sagas")
    ));
    out
}

fn render_dead_letters(answer: &Value) -> String {
    render_page(
        answer,
        "dead_letters",
        "no dead letters",
        &["AT", "SAGA", "ROUTING KEY", "BYTES", "REASON"],
        |letter| {
            vec![
                text(&letter["at"]),
                text(&letter["saga_id"]),
                text(&letter["routing_key"]),
                text(&letter["body_bytes"]),
                truncate(letter["reason"].as_str().unwrap_or("-"), 80),
            ]
        },
    )
}

fn render_outbox(answer: &Value) -> String {
    render_page(
        answer,
        "commands",
        "no refused commands",
        &[
            "SINCE",
            "SAGA",
            "ROUTING KEY",
            "ATTEMPT",
            "REFUSALS",
            "LAST ERROR",
        ],
        |command| {
            vec![
                text(&command["since"]),
                text(&command["saga_id"]),
                text(&command["routing_key"]),
                text(&command["attempt"]),
                text(&command["publish_attempts"]),
                truncate(command["last_error"].as_str().unwrap_or("-"), 80),
            ]
        },
    )
}

/// A page of a list answer (`answer[key]`) as a table, then the cursor of
/// the next page when there is one.
fn render_page(
    answer: &Value,
    key: &str,
    empty: &str,
    headers: &[&str],
    row: impl Fn(&Value) -> Vec<String>,
) -> String {
    let rows: Vec<Vec<String>> = answer[key]
        .as_array()
        .into_iter()
        .flatten()
        .map(row)
        .collect();
    if rows.is_empty() {
        return format!("{empty}\n");
    }
    let mut out = table(headers, &rows);
    if let Some(cursor) = answer["next_cursor"].as_str() {
        out.push_str(&format!("more: --cursor {}\n", clean(cursor)));
    }
    out
}

fn client_row(client: &Value) -> Vec<String> {
    let limits = &client["limits"];
    vec![
        text(&client["name"]),
        text(&limits["rate_per_second"]),
        text(&limits["rate_burst"]),
        format!(
            "{}/{}",
            text(&client["in_flight"]),
            text(&limits["max_in_flight"])
        ),
        match client["revoked_at"].is_null() {
            true => "active".to_owned(),
            false => format!("revoked {}", time(&client["revoked_at"], false)),
        },
    ]
}

const CLIENT_HEADERS: [&str; 5] = ["NAME", "RATE/S", "BURST", "IN FLIGHT", "STATUS"];

fn render_clients(answer: &Value) -> String {
    let clients = answer["clients"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if clients.is_empty() {
        return "No checkout client.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = clients.iter().map(client_row).collect();
    table(&CLIENT_HEADERS, &rows)
}

fn render_client(client: &Value) -> String {
    table(&CLIENT_HEADERS, &[client_row(client)])
}

fn render_new_client(answer: &Value) -> String {
    format!(
        "{}\nKey (shown once, keep it secret; only its digest is stored):\n{}\n",
        render_client(&answer["client"]).trim_end(),
        text(&answer["key"])
    )
}

fn render_bulk(answer: &Value) -> String {
    let count = answer["count"].as_u64().unwrap_or(0);
    if answer["dry_run"].as_bool() != Some(true) {
        return format!("retried {}\n", plural(count, "saga", "sagas"));
    }
    let mut out = format!(
        "dry run: {} would be retried\n",
        plural(count, "suspended saga", "suspended sagas")
    );
    for id in answer["saga_ids"].as_array().into_iter().flatten() {
        out.push_str(&text(id));
        out.push('\n');
    }
    out
}

async fn run(cli: Cli) -> Result<String, Failure> {
    let api = Api::new(&cli.global)?;
    let (request, render) = plan(cli.command);
    let (raw, answer) = api.send(request).await?;
    Ok(if cli.global.json {
        format!("{}\n", raw.trim_end())
    } else {
        render(&answer)
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let failure = match run(cli).await {
        Ok(out) => match std::io::stdout().lock().write_all(out.as_bytes()) {
            // `sagactl list | head` closing the pipe early is not a failure.
            Ok(()) => return ExitCode::SUCCESS,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return ExitCode::SUCCESS,
            Err(e) => Failure::new(1, "Output failed", e.to_string()),
        },
        Err(failure) => failure,
    };
    eprintln!("{}", failure.line());
    ExitCode::from(failure.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_exact_and_signed() {
        let usd = json!("USD");
        assert_eq!(money(&json!(4545), &usd), "45.45 USD");
        assert_eq!(money(&json!(5), &usd), "0.05 USD");
        assert_eq!(money(&json!(-105), &usd), "-1.05 USD");
        assert_eq!(money(&json!(0), &Value::Null), "0.00");
        assert_eq!(money(&Value::Null, &usd), "-");
        assert_eq!(money(&json!(i64::MIN), &usd), "-92233720368547758.08 USD");
    }

    #[test]
    fn a_problem_becomes_one_line_with_every_field_error_once() {
        let body = json!({
            "title": "Invalid request",
            "detail": "limit: must be a number from 1 to 500",
            "errors": [
                {"field": "limit", "message": "must be a number from 1 to 500"},
                {"field": "status", "message": "must be one of\nrunning"},
            ],
        })
        .to_string();
        let failure = Failure::from_answer(StatusCode::UNPROCESSABLE_ENTITY, &body);
        assert_eq!(failure.code, 6);
        assert_eq!(
            failure.line(),
            "sagactl: Invalid request: limit: must be a number from 1 to 500 \
             (status: must be one of running)"
        );
    }

    #[test]
    fn statuses_map_to_exit_codes_even_without_a_problem_body() {
        for (status, code) in [(404, 3), (409, 4), (401, 5), (415, 6), (502, 7), (302, 1)] {
            let failure = Failure::from_answer(StatusCode::from_u16(status).unwrap(), "");
            assert_eq!(failure.code, code, "{status}");
            assert_eq!(failure.line().lines().count(), 1);
        }
        let failure = Failure::from_answer(StatusCode::BAD_GATEWAY, "<html>\nbad</html>");
        assert!(failure
            .line()
            .starts_with("sagactl: 502 Bad Gateway: the answer is not"));
    }

    #[test]
    fn urls_keep_a_base_path_and_escape_segments() {
        let global = Global {
            url: base_url("http://host:1/support/").unwrap(),
            token: Some("t".into()),
            json: false,
            timeout: 1,
        };
        let api = Api::new(&global).unwrap();
        let path = ["v1".to_owned(), "a/b?c".to_owned()];
        assert_eq!(
            api.url(&path).as_str(),
            "http://host:1/support/v1/a%2Fb%3Fc"
        );
    }

    #[test]
    fn tables_align_and_end_without_spaces() {
        let out = table(
            &["A", "BB"],
            &[vec!["long".into(), "x".into()], vec!["é".into(), "".into()]],
        );
        assert_eq!(out, "A     BB\nlong  x\né\n");
    }
}
