//! The readable form of an answer: tables and lines for a terminal.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// Server text made safe for one terminal cell: a control character (a
/// newline in an error, an escape sequence from a provider) would break
/// the layout or drive the terminal.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

pub fn truncate(text: &str, max: usize) -> String {
    let text = clean(text);
    if text.chars().count() <= max {
        return text;
    }
    let kept: String = text.chars().take(max - 1).collect();
    format!("{kept}…")
}

/// A JSON scalar as text; `-` for null or missing, so no cell is empty.
pub fn text(value: &Value) -> String {
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

pub fn render_list(answer: &Value) -> String {
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

pub fn render_saga(saga: &Value) -> String {
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
    out.push_str(&render_timeline(&saga["timeline"]));
    out
}

/// A saga's timeline, as the support API and the archive both give it.
fn render_timeline(entries: &Value) -> String {
    let mut out = String::from("\ntimeline:\n");
    let rows: Vec<Vec<String>> = entries
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

/// A saga as the archive keeps it: its stored row and timeline.
pub fn render_archived(record: &Value) -> String {
    let saga = &record["saga"];
    let dead_letters = record["dead_letters"].as_array().map_or(0, Vec::len);
    let fields = [
        ("saga", text(&saga["id"])),
        ("status", text(&saga["status"])),
        ("last error", text(&saga["last_error"])),
        ("client", text(&saga["client"])),
        ("created", time(&saga["created_at"], false)),
        ("updated", time(&saga["updated_at"], false)),
        ("archived", time(&record["archived_at"], false)),
        ("dead letters", dead_letters.to_string()),
    ];
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in &fields {
        out.push_str(&format!("{key:<width$}  {value}\n"));
    }
    out.push_str(&render_timeline(&record["events"]));
    out
}

pub fn render_acted(saga: &Value) -> String {
    format!(
        "saga {} is now {} (checkout {})\n",
        text(&saga["saga_id"]),
        text(&saga["status"]),
        text(&saga["checkout_status"])
    )
}

pub fn render_extended(answer: &Value) -> String {
    let until = match &answer["park_expires_at"] {
        Value::Null => "parks never expire here (PARKED_SAGA_TTL=0)".to_owned(),
        at => format!("parked until {}", time(at, false)),
    };
    format!("saga {} {until}\n", text(&answer["saga_id"]))
}

pub fn render_failures(answer: &Value) -> String {
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

pub fn render_dead_letters(answer: &Value) -> String {
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

pub fn render_outbox(answer: &Value) -> String {
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
pub fn render_page(
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

pub fn render_clients(answer: &Value) -> String {
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

pub fn render_client(client: &Value) -> String {
    table(&CLIENT_HEADERS, &[client_row(client)])
}

pub fn render_new_client(answer: &Value) -> String {
    format!(
        "{}\nKey (shown once, keep it secret; only its digest is stored):\n{}\n",
        render_client(&answer["client"]).trim_end(),
        text(&answer["key"])
    )
}

pub fn render_bulk(answer: &Value) -> String {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

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
    fn tables_align_and_end_without_spaces() {
        let out = table(
            &["A", "BB"],
            &[vec!["long".into(), "x".into()], vec!["é".into(), "".into()]],
        );
        assert_eq!(out, "A     BB\nlong  x\né\n");
    }
}
