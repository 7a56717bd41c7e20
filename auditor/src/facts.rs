//! The facts the invariants check, for one slice of sagas at a time (read
//! by [`crate::snapshots`]), and the databases they come from.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use sqlx::postgres::{PgPool, PgPoolOptions};
use uuid::Uuid;

use crate::config::{Config, DatabaseUrl};

/// The three databases an audit reads, and how it judges deadlines.
#[derive(Debug, Clone)]
pub struct Sources {
    pub orchestrator: PgPool,
    pub inventory: PgPool,
    pub payment: PgPool,
    /// How far in the past a deadline may be before its saga counts as stuck:
    /// the deadline timer fires within a second or so, not at the instant.
    pub deadline_grace: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Database {
    Orchestrator,
    Inventory,
    Payment,
}

impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Database::Orchestrator => "orchestrator",
            Database::Inventory => "inventory",
            Database::Payment => "payment",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("could not read the {database} database")]
    Read {
        database: Database,
        #[source]
        source: sqlx::Error,
    },
    /// The provider's books (`--provider stripe`) could not be read.
    #[error("could not read the provider's books")]
    Provider(#[source] crate::stripe::StripeReadError),
}

fn read_error(database: Database) -> impl FnOnce(sqlx::Error) -> AuditError {
    move |source| AuditError::Read { database, source }
}

impl Sources {
    /// Opens a small pool per database whose sessions default to read-only,
    /// so that not even a mistake in this tool could write.
    pub async fn connect(config: &Config) -> Result<Sources, AuditError> {
        // The build carries two rustls crypto providers (ring, aws-lc-rs):
        // name one, or an `sslmode=verify-ca` URL panics in sqlx.
        let _ = rustls::crypto::ring::default_provider().install_default();
        async fn open(url: &DatabaseUrl, database: Database) -> Result<PgPool, AuditError> {
            let options = url
                .connect_options()
                .application_name("auditor")
                .options([("default_transaction_read_only", "on")]);
            PgPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(options)
                .await
                .map_err(read_error(database))
        }
        let (orchestrator, inventory, payment) = tokio::try_join!(
            open(&config.orchestrator, Database::Orchestrator),
            open(&config.inventory, Database::Inventory),
            open(&config.payment, Database::Payment),
        )?;
        Ok(Sources {
            orchestrator,
            inventory,
            payment,
            deadline_grace: config.deadline_grace,
        })
    }
}

/// The auditor reads a saga's `status` column with the one definition of
/// the statuses every reader shares.
pub use saga_protocol::status::SagaStatus;

/// Quantities per SKU: a request or reservation may name a SKU on several
/// lines, and only the total per SKU matters.
pub type Quantities = BTreeMap<String, i64>;

/// What a saga's stored state says about its money and stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaState {
    pub requested: Quantities,
    /// Set once inventory reserved: the priced lines' currency and sum.
    pub reserved: Option<ReservedTotal>,
    /// Set once tax was calculated.
    pub tax_cents: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedTotal {
    pub currency: String,
    /// `None` when it overflows an `i64`: the orchestrator rejects such a
    /// checkout (`invalid_amount`), so only a completed one is wrong.
    pub subtotal_cents: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saga {
    pub id: Uuid,
    /// `Err` holds why the status or state could not be read.
    pub status: Result<SagaStatus, String>,
    pub state: Result<SagaState, String>,
    pub idempotency_key: Option<String>,
    pub deadline_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub on_hand: i64,
    pub available: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub active: bool,
    pub lines: Quantities,
}

impl Reservation {
    /// Left by a release that came before its reserve; it never held stock.
    pub fn is_tombstone(&self) -> bool {
        !self.active && self.lines.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Payment {
    pub status: String,
    pub amount_cents: i64,
    pub refunded_cents: i64,
    pub currency: Option<String>,
}

impl Payment {
    /// Left by a refund that came before its charge (or after failed
    /// attempts only); it never moved money.
    pub fn is_tombstone(&self) -> bool {
        self.status == "refunded" && self.amount_cents == 0
    }

    /// Money the customer is out of: only charged and refunded rows ever
    /// held any. `amount_cents` is what was charged and `refunded_cents`
    /// what came back; payment workers before v0.4 overwrote the first
    /// with the second on a refund, which nets such a row to zero (a short
    /// refund then shows only in the provider's ledger, ledger-net-zero).
    pub fn net_cents(&self) -> i64 {
        match self.status.as_str() {
            "charged" | "refunded" => self.amount_cents - self.refunded_cents,
            _ => 0,
        }
    }
}

/// What the payment provider's ledger shows for one saga: its approved
/// charges and refunds, counted and summed. The provider is a separate
/// party, so this is the money that really moved, whatever the payment
/// table says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct LedgerLine {
    pub charges: i64,
    pub charged_cents: i64,
    pub refunds: i64,
    pub refunded_cents: i64,
}

impl LedgerLine {
    /// Money the customer is out of, by the provider's books.
    pub fn net_cents(&self) -> i64 {
        self.charged_cents - self.refunded_cents
    }

    /// Only declined or voided operations: nothing ever moved.
    pub fn moved_nothing(&self) -> bool {
        self.charges == 0 && self.refunds == 0
    }
}

/// Everything an audit checks, as read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// The orchestrator database's clock at its snapshot: deadlines are
    /// judged by the clock that set them, not by this host's.
    pub now: DateTime<Utc>,
    /// In id order, so that reports are stable.
    pub sagas: Vec<Saga>,
    /// Sagas with a command in the outbox (due now or a delayed retry).
    pub with_outbox: HashSet<Uuid>,
    /// Sagas created after the orchestrator's snapshot, found when
    /// rechecking would-be orphans.
    pub created_since: HashSet<Uuid>,
    pub products: BTreeMap<String, Product>,
    pub reservations: HashMap<Uuid, Reservation>,
    pub payments: HashMap<Uuid, Payment>,
    /// The provider's ledger per saga.
    pub ledger: HashMap<Uuid, LedgerLine>,
    /// The orchestrator's retention horizon: a saga below it that is gone
    /// was archived, and the records it left in the workers' databases are
    /// no orphans.
    pub archived_below: Option<Uuid>,
    /// The workers' retention horizons: a saga below one may have lost its
    /// reservation, or its payment and ledger lines, to that retention.
    pub reservations_kept_from: Option<Uuid>,
    pub payments_kept_from: Option<Uuid>,
}

impl Facts {
    /// Whether saga `id`, not in the orchestrator's database, may have been
    /// archived there.
    pub fn may_be_archived(&self, id: &Uuid) -> bool {
        self.archived_below.is_some_and(|below| *id < below)
    }

    /// Whether saga `id` may have lost its reservation to retention.
    pub fn reservation_may_be_pruned(&self, id: &Uuid) -> bool {
        self.reservations_kept_from.is_some_and(|from| *id < from)
    }

    /// Whether saga `id` may have lost its payment and ledger lines to
    /// retention.
    pub fn payment_may_be_pruned(&self, id: &Uuid) -> bool {
        self.payments_kept_from.is_some_and(|from| *id < from)
    }
}

/// The shapes of the engine's stored state (`orchestrator::saga::Saga`),
/// reduced to what is checked; unknown fields are ignored.
#[derive(Deserialize)]
struct Item {
    sku: String,
    quantity: i64,
}

#[derive(Deserialize)]
struct Reserved {
    currency: String,
    lines: Vec<PricedLine>,
}

#[derive(Deserialize)]
struct PricedLine {
    quantity: i64,
    unit_price_cents: i64,
}

pub(crate) fn saga_state(
    items: Option<Value>,
    reserved: Option<Value>,
    tax: Option<Value>,
) -> Result<SagaState, String> {
    fn field<T: serde::de::DeserializeOwned>(name: &str, value: Value) -> Result<T, String> {
        serde_json::from_value(value).map_err(|e| format!("state.{name}: {e}"))
    }
    let items: Vec<Item> = field("request.items", items.ok_or("state has no request.items")?)?;
    let mut requested = Quantities::new();
    for item in items {
        *requested.entry(item.sku).or_default() += item.quantity;
    }
    let reserved = match reserved {
        None | Some(Value::Null) => None,
        Some(value) => {
            let reserved: Reserved = field("reserved", value)?;
            let subtotal_cents = reserved.lines.iter().try_fold(0i64, |sum, l| {
                sum.checked_add(l.quantity.checked_mul(l.unit_price_cents)?)
            });
            Some(ReservedTotal {
                currency: reserved.currency,
                subtotal_cents,
            })
        }
    };
    let tax_cents = match tax {
        None | Some(Value::Null) => None,
        Some(value) => Some(field("tax.tax_cents", value)?),
    };
    Ok(SagaState {
        requested,
        reserved,
        tax_cents,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_state_before_and_after_reserving() {
        let fresh = saga_state(
            Some(json!([{"sku": "a", "quantity": 1}, {"sku": "a", "quantity": 2}])),
            Some(Value::Null),
            None,
        )
        .unwrap();
        assert_eq!(fresh.requested, Quantities::from([("a".into(), 3)]));
        assert_eq!((fresh.reserved, fresh.tax_cents), (None, None));

        let priced = saga_state(
            Some(json!([{"sku": "a", "quantity": 3}])),
            Some(json!({"currency": "USD", "lines": [
                {"sku": "a", "quantity": 1, "unit_price_cents": 250, "tax_category": "std"},
                {"sku": "a", "quantity": 2, "unit_price_cents": 250, "tax_category": "std"}
            ]})),
            Some(json!(60)),
        )
        .unwrap();
        let reserved = priced.reserved.unwrap();
        assert_eq!(
            (reserved.currency.as_str(), reserved.subtotal_cents.unwrap()),
            ("USD", 750)
        );
        assert_eq!(priced.tax_cents, Some(60));
    }

    #[test]
    fn explains_an_unreadable_state() {
        let err = saga_state(Some(json!([{"sku": 7}])), None, None).unwrap_err();
        assert!(err.starts_with("state.request.items"), "{err}");
    }
}
