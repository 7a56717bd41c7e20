//! `sagactl`: the support API (docs/admin-api.md) from a terminal.
//!
//! A plain HTTP client of a running orchestrator, not of its database or
//! its library types (but for `archive`, which reads the archive's files
//! as the orchestrator wrote them): it works against any deployment, and reads answers
//! as loose JSON so a field the server adds later breaks nothing. The
//! readable form is for people; `--json` passes the server's body through
//! untouched for scripts, and the exit code says what kind of failure it
//! was, so a script never has to parse an error message.

mod args;
mod client;
mod failure;
mod render;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use serde_json::{json, Map, Value};

use args::{page_query, ActionArgs, ArchiveCommand, Cli, ClientsCommand, Command};
use client::{Api, Request};
use failure::Failure;
use render::{
    render_acted, render_archived, render_bulk, render_client, render_clients, render_dead_letters,
    render_extended, render_failures, render_list, render_new_client, render_outbox, render_saga,
};

/// What to ask for, and how to show the answer to a person.
fn plan(command: Command) -> (Request, fn(&Value) -> String) {
    const SAGAS: [&str; 3] = ["v1", "admin", "sagas"];
    match command {
        Command::List(args) => {
            let request = Request::get(&SAGAS).with_query(
                [
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
                ]
                .into_iter()
                .chain(page_query(args.limit, args.cursor)),
            );
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
            let request = Request::get(&["v1", "admin", "dead-letters"]).with_query(
                [("saga_id", args.saga.map(|id| id.to_string()))]
                    .into_iter()
                    .chain(args.page.query()),
            );
            (request, render_dead_letters)
        }
        Command::Outbox(args) => {
            let request = Request::get(&["v1", "admin", "outbox"]).with_query(args.query());
            (request, render_outbox)
        }
        // Read from the archive, before any request is planned.
        Command::Archive(_) => unreachable!("`archive` asks no API"),
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

async fn run(cli: Cli) -> Result<String, Failure> {
    if let Command::Archive(ArchiveCommand::Find { id, archive }) = &cli.command {
        let record = archived(*id, archive).await?;
        return Ok(if cli.global.json {
            format!("{record}\n")
        } else {
            render_archived(&record)
        });
    }
    let api = Api::new(&cli.global)?;
    let (request, render) = plan(cli.command);
    let (raw, answer) = api.send(request).await?;
    Ok(if cli.global.json {
        format!("{}\n", raw.trim_end())
    } else {
        render(&answer)
    })
}

/// Saga `id` from the archive at `location`.
async fn archived(id: uuid::Uuid, location: &str) -> Result<Value, Failure> {
    use orchestrator::archive::{Archive, ArchiveLocation};
    let variables = std::collections::HashMap::from([("ARCHIVE".to_owned(), location.to_owned())]);
    let location = ArchiveLocation::from_source(&variables)
        .map_err(|error| Failure::new(2, "Bad archive", error.to_string()))?;
    if let ArchiveLocation::Folder(folder) = &location {
        if !folder.is_dir() {
            return Err(Failure::new(
                2,
                "Bad archive",
                format!(
                    "{} is not a folder (--archive, or ARCHIVE)",
                    folder.display()
                ),
            ));
        }
    }
    let archive = Archive::open(&location)
        .map_err(|error| Failure::new(7, "Archive unreadable", error.to_string()))?;
    match archive.find_saga(id).await {
        Ok(Some(record)) => Ok(record),
        Ok(None) => Err(Failure::new(
            3,
            "Not found",
            format!(
                "no saga with id `{id}` in the archive at {}",
                archive.location()
            ),
        )),
        Err(error) => Err(Failure::new(7, "Archive unreadable", error.to_string())),
    }
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
