//! Who may send each step's reply. Every service connects to RabbitMQ as a
//! user of its own and stamps what it publishes with the AMQP `user_id`
//! property, which RabbitMQ checks against the connection's user: a reply
//! whose `user_id` is the payment worker's user came from a connection
//! that logged in as that user. `WORKER_USERS` names each worker kind's
//! user; a reply from anyone else is dead-lettered as "unexpected sender"
//! and never applied.
//!
//! Unset, replies are not checked (and the orchestrator says so once at
//! start): workers of releases before 0.4 stamp no `user_id`, so the check
//! is switched on once every worker runs 0.4 or later (docs/security.md).

use std::collections::HashMap;

use saga_protocol::messages::WorkerKind;
use saga_protocol::Step;
use saga_shared::config::{ConfigError, Source};

const VARIABLE: &str = "WORKER_USERS";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplySenders {
    /// `None`: not configured, nothing checked.
    users: Option<HashMap<WorkerKind, String>>,
}

impl ReplySenders {
    /// `WORKER_USERS=inventory=USER,tax=USER,payment=USER`: every worker
    /// kind named once, nothing else.
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let Some(value) = source.get(VARIABLE).filter(|v| !v.trim().is_empty()) else {
            return Ok(ReplySenders::default());
        };
        let invalid = |reason: String| ConfigError::Invalid {
            name: VARIABLE,
            reason,
        };
        let mut users = HashMap::new();
        for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (kind, user) = pair.split_once('=').ok_or_else(|| {
                invalid(format!(
                    "'{pair}' is not KIND=USER (e.g. inventory=checkout-inventory)"
                ))
            })?;
            let kind = WorkerKind::ALL
                .into_iter()
                .find(|k| k.as_str() == kind.trim())
                .ok_or_else(|| {
                    invalid(format!(
                        "'{}' is no worker kind (inventory, tax or payment)",
                        kind.trim()
                    ))
                })?;
            let user = user.trim();
            if user.is_empty() {
                return Err(invalid(format!("{} has an empty user", kind.as_str())));
            }
            if users.insert(kind, user.to_owned()).is_some() {
                return Err(invalid(format!("{} is named twice", kind.as_str())));
            }
        }
        if let Some(missing) = WorkerKind::ALL.iter().find(|k| !users.contains_key(k)) {
            return Err(invalid(format!(
                "names no user for {}: every worker kind needs one",
                missing.as_str()
            )));
        }
        Ok(ReplySenders { users: Some(users) })
    }

    pub fn is_configured(&self) -> bool {
        self.users.is_some()
    }

    /// Why a reply for `step` stamped `user_id` must not be applied, if
    /// it must not.
    pub fn refuse(&self, step: Step, user_id: Option<&str>) -> Option<String> {
        let expected = self.users.as_ref()?.get(&step.worker())?;
        match user_id {
            Some(user) if user == expected => None,
            Some(user) => Some(format!(
                "unexpected sender: a {} reply from RabbitMQ user '{user}', expected '{expected}'",
                step.routing_key()
            )),
            None => Some(format!(
                "unexpected sender: a {} reply without a user_id, expected '{expected}'",
                step.routing_key()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> Result<ReplySenders, ConfigError> {
        let source: HashMap<String, String> = [(VARIABLE.to_owned(), value.to_owned())].into();
        ReplySenders::from_source(&source)
    }

    #[test]
    fn unset_checks_nothing() {
        let senders = ReplySenders::from_source(&HashMap::new()).unwrap();
        assert!(!senders.is_configured());
        assert_eq!(senders.refuse(Step::Charge, Some("guest")), None);
        assert_eq!(senders.refuse(Step::Charge, None), None);
    }

    #[test]
    fn only_the_steps_worker_user_is_accepted() {
        let senders = parse("inventory=inv, tax=tx,payment=pay").unwrap();
        assert_eq!(senders.refuse(Step::Charge, Some("pay")), None);
        assert_eq!(senders.refuse(Step::Reserve, Some("inv")), None);
        let refused = senders.refuse(Step::Charge, Some("inv")).unwrap();
        assert!(refused.starts_with("unexpected sender"), "{refused}");
        assert!(
            refused.contains("'inv'") && refused.contains("'pay'"),
            "{refused}"
        );
        let unsigned = senders.refuse(Step::Refund, None).unwrap();
        assert!(unsigned.contains("without a user_id"), "{unsigned}");
    }

    #[test]
    fn a_malformed_value_names_the_variable_and_why() {
        for (value, why) in [
            ("inventory=a,tax=b", "payment"),
            ("inventory=a,tax=b,payment=c,shipping=d", "shipping"),
            ("inventory=a,tax=b,payment", "KIND=USER"),
            ("inventory=a,inventory=b,tax=b,payment=c", "twice"),
            ("inventory=,tax=b,payment=c", "empty"),
        ] {
            let error = parse(value).unwrap_err().to_string();
            assert!(
                error.contains(VARIABLE) && error.contains(why),
                "{value}: {error}"
            );
        }
    }
}
