//! What the catalogue and tax-rate imports share: reading an operator's CSV
//! file, and reporting every bad row at once so that one run finds them all.

use std::fmt;
use std::io::Read;

use crate::WorkerError;

/// Problems beyond this many are counted, not listed: the error stays one
/// readable line.
const LISTED_PROBLEMS: usize = 10;

/// A data row and the line of the file it came from (the header is line 1).
pub struct Row {
    pub line: u64,
    pub record: csv::StringRecord,
}

/// Every problem found in one file, each naming its line and field.
pub struct Problems {
    source: String,
    found: Vec<String>,
}

impl Problems {
    pub fn new(source: &str) -> Self {
        Problems {
            source: source.to_owned(),
            found: Vec::new(),
        }
    }

    pub fn add(&mut self, line: u64, field: &str, problem: impl fmt::Display) {
        self.found.push(format!("line {line}, {field}: {problem}"));
    }

    /// `Err(WorkerError::Input)` listing the problems when there is any.
    pub fn into_result(self) -> Result<(), WorkerError> {
        if self.found.is_empty() {
            return Ok(());
        }
        let total = self.found.len();
        let mut listed = self.found[..total.min(LISTED_PROBLEMS)].join("; ");
        if total > LISTED_PROBLEMS {
            listed.push_str(&format!("; and {} more", total - LISTED_PROBLEMS));
        }
        Err(WorkerError::Input(format!(
            "{}: {listed} (nothing imported)",
            self.source
        )))
    }
}

/// Reads every row of a CSV file whose header must be exactly `header`.
/// A malformed file is an input error naming the line.
pub fn read_rows(
    source: &str,
    mut input: impl Read,
    header: &[&str],
) -> Result<Vec<Row>, WorkerError> {
    let mut bytes = Vec::new();
    input
        .read_to_end(&mut bytes)
        .map_err(|e| WorkerError::Input(format!("{source}: cannot read: {e}")))?;
    // Spreadsheets save "CSV UTF-8" with a byte-order mark, which would
    // otherwise make the header look wrong.
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .trim(csv::Trim::All)
        .from_reader(text);
    let mut problems = Problems::new(source);
    let mut rows = Vec::new();
    let mut records = reader.records();
    match records.next() {
        Some(Ok(found)) if found.iter().eq(header.iter().copied()) => {}
        Some(Ok(found)) => {
            let found: Vec<&str> = found.iter().collect();
            problems.add(
                1,
                "header",
                format!(
                    "expected `{}`, found `{}`",
                    header.join(","),
                    found.join(",")
                ),
            );
        }
        Some(Err(error)) => problems.add(line_of(&error), "header", csv_problem(&error)),
        None => problems.add(
            1,
            "header",
            format!("the file is empty; expected `{}`", header.join(",")),
        ),
    }
    problems.into_result()?;

    let mut problems = Problems::new(source);
    for record in records {
        match record {
            Ok(record) if record.iter().all(str::is_empty) => {}
            Ok(record) => rows.push(Row {
                line: record.position().map_or(0, |p| p.line()),
                record,
            }),
            Err(error) => problems.add(line_of(&error), "row", csv_problem(&error)),
        }
    }
    problems.into_result()?;
    Ok(rows)
}

fn line_of(error: &csv::Error) -> u64 {
    error.position().map_or(0, |p| p.line())
}

fn csv_problem(error: &csv::Error) -> String {
    match error.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("has {len} fields, expected {expected_len}"),
        csv::ErrorKind::Utf8 { .. } => "is not valid UTF-8".to_owned(),
        _ => error.to_string(),
    }
}

/// What an import did, printed as its one-line summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportSummary {
    /// What was imported, plural: `products`, `tax rates`.
    pub what: &'static str,
    pub new: u64,
    pub updated: u64,
}

impl ImportSummary {
    /// The summary of `imported` rows of `what`, `updated` of which were
    /// there before.
    pub fn of(what: &'static str, imported: usize, updated: usize) -> Self {
        ImportSummary {
            what,
            new: (imported - updated) as u64,
            updated: updated as u64,
        }
    }
}

impl fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "imported {} {} ({} new, {} updated)",
            self.new + self.updated,
            self.what,
            self.new,
            self.updated
        )
    }
}
