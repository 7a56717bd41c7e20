//! The one reader of the Prometheus text a service serves at `/metrics`.
//!
//! A series is named as an operator writes it, `name{label="value",…}`,
//! and matches a sample with the same name and the same labels, in any
//! order (the exporter's order is its own). Where a series is missing, the
//! caller says what that means: [`Metrics::value`] for a series that must
//! be there, [`Metrics::value_or_zero`] for one that legitimately appears
//! only with its first event (a histogram's series, a labelled counter
//! that was never incremented).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One scrape: its samples, and its text for failure messages.
pub struct Metrics {
    samples: Vec<Sample>,
    text: String,
}

struct Sample {
    series: Series,
    value: f64,
}

/// A metric name and its labels, sorted.
#[derive(PartialEq, Eq)]
struct Series {
    name: String,
    labels: BTreeMap<String, String>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .filter_map(|line| {
                let (series, rest) = Series::parse(line)?;
                let value = rest.split_whitespace().next()?.parse().ok()?;
                Some(Sample { series, value })
            })
            .collect();
        Metrics {
            samples,
            text: text.to_owned(),
        }
    }

    /// The value of `series`; `None` when the service does not export it.
    pub fn value(&self, series: &str) -> Option<f64> {
        let (wanted, rest) =
            Series::parse(series).unwrap_or_else(|| panic!("not a series: {series}"));
        assert!(rest.trim().is_empty(), "not a series: {series}");
        self.samples
            .iter()
            .find(|sample| sample.series == wanted)
            .map(|sample| sample.value)
    }

    /// The value of `series`, 0 when it is not exported yet: only for a
    /// series that appears with its first event.
    pub fn value_or_zero(&self, series: &str) -> f64 {
        self.value(series).unwrap_or(0.0)
    }

    /// How much `series` grew since `before`: the recorder of a test
    /// process is shared by all its tests, so only growth is one test's own.
    pub fn growth_since(&self, before: &Metrics, series: &str) -> f64 {
        self.value_or_zero(series) - before.value_or_zero(series)
    }

    /// The metric names of every sample (a histogram's `_bucket`, `_sum`
    /// and `_count` apart).
    pub fn names(&self) -> BTreeSet<String> {
        self.samples
            .iter()
            .map(|sample| sample.series.name.clone())
            .collect()
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Series {
    /// The series `line` begins with, and what follows it.
    fn parse(line: &str) -> Option<(Series, &str)> {
        let end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
        let name = line[..end].to_owned();
        if name.is_empty() {
            return None;
        }
        let mut rest = &line[end..];
        let mut labels = BTreeMap::new();
        if let Some(inside) = rest.strip_prefix('{') {
            rest = inside;
            loop {
                rest = rest.trim_start_matches([' ', ',']);
                if let Some(after) = rest.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let (label, after) = rest.split_once("=\"")?;
                let (value, after) = quoted(after)?;
                labels.insert(label.trim().to_owned(), value);
                rest = after;
            }
        }
        Some((Series { name, labels }, rest))
    }
}

/// A label value up to its closing quote, unescaped, and what follows.
fn quoted(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[at + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

/// `GET {base_url}/metrics`, which must answer 200.
pub async fn scrape(base_url: &str) -> Metrics {
    let response = reqwest::get(format!("{base_url}/metrics"))
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200, "GET {base_url}/metrics");
    Metrics::parse(&response.text().await.expect("the body of /metrics"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP checkout_sagas Sagas by status
# TYPE checkout_sagas gauge
checkout_sagas{status="completed"} 3
checkout_sagas{status="cancelled"} 0
checkout_outbox_pending 0
checkout_reply_mismatches_total{step="payment.charge",field="amount_cents"} 2
checkout_duration_seconds_bucket{status="completed",le="+Inf"} 5
odd{note="a \"quoted\", comma} 1"} 7 1700000000000
"#;

    #[test]
    fn a_series_matches_its_name_and_all_its_labels_in_any_order() {
        let metrics = Metrics::parse(TEXT);
        assert_eq!(
            metrics.value(r#"checkout_sagas{status="completed"}"#),
            Some(3.0)
        );
        assert_eq!(metrics.value("checkout_outbox_pending"), Some(0.0));
        assert_eq!(
            metrics.value(
                r#"checkout_reply_mismatches_total{field="amount_cents",step="payment.charge"}"#
            ),
            Some(2.0)
        );
        assert_eq!(
            metrics.value(r#"checkout_duration_seconds_bucket{le="+Inf",status="completed"}"#),
            Some(5.0)
        );
        assert_eq!(
            metrics.value(r#"odd{note="a \"quoted\", comma} 1"}"#),
            Some(7.0)
        );
        // Neither a prefix of the name nor a part of the labels is the series.
        assert_eq!(metrics.value("checkout_saga"), None);
        assert_eq!(metrics.value("checkout_sagas"), None);
        assert_eq!(
            metrics.value(r#"checkout_reply_mismatches_total{step="payment.charge"}"#),
            None
        );
    }

    #[test]
    fn a_missing_series_reads_zero_only_when_asked_to() {
        let metrics = Metrics::parse(TEXT);
        assert_eq!(metrics.value(r#"checkout_sagas{status="parked"}"#), None);
        assert_eq!(
            metrics.value_or_zero(r#"checkout_sagas{status="parked"}"#),
            0.0
        );
        let before = Metrics::parse("");
        assert_eq!(
            metrics.growth_since(&before, r#"checkout_sagas{status="completed"}"#),
            3.0
        );
    }

    #[test]
    fn names_are_every_sample_s_metric() {
        let names = Metrics::parse(TEXT).names();
        assert!(names.contains("checkout_sagas"));
        assert!(names.contains("checkout_duration_seconds_bucket"));
        assert!(!names.iter().any(|name| name.starts_with('#')));
    }
}
