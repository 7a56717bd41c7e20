use saga_shared::broker::BrokerError;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The database failed or is unreachable: the command is neither acked
    /// nor answered; it is tried again once the database is back.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema is not one this build can run on, or a migration failed.
    #[error(transparent)]
    Schema(#[from] saga_shared::schema::SchemaError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// Bad operator input (a CSV file, a subcommand argument).
    #[error("{0}")]
    Input(String),
    /// An operator command could not write its output.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}
