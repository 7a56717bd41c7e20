//! Every way the bench can fail, in one place.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum BenchError {
    #[error("HTTP request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{what} answered {status}: {body}")]
    Refused {
        what: &'static str,
        status: reqwest::StatusCode,
        body: String,
    },
    #[error("the answer to {0} carries no usable checkout")]
    Malformed(&'static str),
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("RabbitMQ: {0}")]
    Broker(#[from] lapin::Error),
    #[error("RabbitMQ did not confirm a publish")]
    NotConfirmed,
    #[error("a probe message was not delivered within {0:?}")]
    Undelivered(std::time::Duration),
    #[error("cannot write results: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot write CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("{0}")]
    Usage(String),
}
