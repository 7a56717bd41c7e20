//! The saga's status: where a checkout stands, as the orchestrator keeps it
//! (its stored state and the `status` column), as support and the auditor
//! read it, and as a checkout client sees it. Part of the published API, so
//! one definition serves every reader.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SagaStatus {
    /// Forward steps in progress.
    Running,
    /// Undoing completed steps in reverse order.
    Compensating,
    /// Parked for support: an action exhausted its attempts.
    Suspended,
    Completed,
    /// Rejected, and every completed step undone.
    Compensated,
    Cancelled,
}

impl SagaStatus {
    /// Every status, in the order the contract and the metrics list them.
    pub const ALL: [SagaStatus; 6] = [
        SagaStatus::Running,
        SagaStatus::Compensating,
        SagaStatus::Suspended,
        SagaStatus::Completed,
        SagaStatus::Compensated,
        SagaStatus::Cancelled,
    ];

    pub fn is_final(self) -> bool {
        matches!(
            self,
            SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SagaStatus::Running => "running",
            SagaStatus::Compensating => "compensating",
            SagaStatus::Suspended => "suspended",
            SagaStatus::Completed => "completed",
            SagaStatus::Compensated => "compensated",
            SagaStatus::Cancelled => "cancelled",
        }
    }

    /// The status a stored or requested text names, if any.
    pub fn parse(text: &str) -> Option<SagaStatus> {
        SagaStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
    }

    pub fn client_status(self) -> ClientStatus {
        match self {
            SagaStatus::Running | SagaStatus::Compensating | SagaStatus::Suspended => {
                ClientStatus::Pending
            }
            SagaStatus::Completed => ClientStatus::Completed,
            SagaStatus::Compensated => ClientStatus::Rejected,
            SagaStatus::Cancelled => ClientStatus::Cancelled,
        }
    }
}

/// What a checkout client sees: a suspended saga is still `pending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientStatus {
    Pending,
    Completed,
    Rejected,
    Cancelled,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_status_reads_back_from_its_text_which_is_its_json_name() {
        for status in SagaStatus::ALL {
            assert_eq!(SagaStatus::parse(status.as_str()), Some(status));
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::Value::String(status.as_str().to_owned())
            );
        }
        assert_eq!(SagaStatus::parse("Running"), None);
        assert_eq!(SagaStatus::parse(""), None);
    }
}
