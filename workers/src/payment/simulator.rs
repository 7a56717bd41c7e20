//! The shipped payment provider: a deterministic simulator whose answer is
//! chosen by the payment method, so a test or a rehearsal can ask for any
//! path through the saga.
//!
//! | method | charge | refund |
//! |---|---|---|
//! | `sim_approve` | approved | approved |
//! | `sim_decline` | declined | approved |
//! | `sim_transient_N` | transient for the saga's first N attempts, then approved | approved |
//! | `sim_slow_MS` | approved after MS milliseconds (at most 60 s) | the same |
//! | `sim_down` | always transient | always transient |

use std::time::Duration;

use uuid::Uuid;

use super::provider::{ChargeRequest, PaymentProvider, ProviderAnswer, RefundRequest};

/// The longest `sim_slow_MS` waits: longer would only hold a worker slot
/// and a database transaction for nothing.
pub const MAX_SLOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, Default)]
pub struct Simulator;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Approve,
    Decline,
    TransientFirst(u32),
    Slow(Duration),
    Down,
}

impl Behaviour {
    fn of(method: &str) -> Option<Behaviour> {
        match method {
            "sim_approve" => Some(Behaviour::Approve),
            "sim_decline" => Some(Behaviour::Decline),
            "sim_down" => Some(Behaviour::Down),
            _ => {
                if let Some(n) = method.strip_prefix("sim_transient_") {
                    n.parse().ok().map(Behaviour::TransientFirst)
                } else if let Some(ms) = method.strip_prefix("sim_slow_") {
                    let ms: u64 = ms.parse().ok()?;
                    Some(Behaviour::Slow(Duration::from_millis(ms).min(MAX_SLOW)))
                } else {
                    None
                }
            }
        }
    }
}

fn approved() -> ProviderAnswer {
    ProviderAnswer::Approved {
        reference: Uuid::now_v7(),
    }
}

fn down() -> ProviderAnswer {
    ProviderAnswer::Transient {
        error: "simulated provider is down (sim_down)".to_owned(),
    }
}

fn unsupported(method: &str) -> ProviderAnswer {
    ProviderAnswer::UnsupportedMethod {
        method: method.to_owned(),
    }
}

impl PaymentProvider for Simulator {
    async fn charge(&self, request: &ChargeRequest<'_>) -> ProviderAnswer {
        let Some(behaviour) = Behaviour::of(request.payment_method) else {
            return unsupported(request.payment_method);
        };
        match behaviour {
            Behaviour::Approve => approved(),
            Behaviour::Decline => ProviderAnswer::Declined {
                reason: "card declined by the simulator (sim_decline)".to_owned(),
            },
            Behaviour::TransientFirst(n) if request.transient_failures < n => {
                ProviderAnswer::Transient {
                    error: format!(
                        "simulated transient failure {} of {n} ({})",
                        request.transient_failures + 1,
                        request.payment_method
                    ),
                }
            }
            Behaviour::TransientFirst(_) => approved(),
            Behaviour::Slow(wait) => {
                tokio::time::sleep(wait).await;
                approved()
            }
            Behaviour::Down => down(),
        }
    }

    async fn refund(&self, request: &RefundRequest<'_>) -> ProviderAnswer {
        match Behaviour::of(request.payment_method) {
            None => unsupported(request.payment_method),
            Some(Behaviour::Down) => down(),
            Some(Behaviour::Slow(wait)) => {
                tokio::time::sleep(wait).await;
                approved()
            }
            Some(_) => approved(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(method: &str, transient_failures: u32) -> ProviderAnswer {
        let request = ChargeRequest {
            saga_id: Uuid::new_v4(),
            amount_cents: 100,
            currency: "USD",
            payment_method: method,
            customer_id: "c1",
            transient_failures,
        };
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(Simulator.charge(&request))
    }

    #[test]
    fn methods_choose_the_answer() {
        assert!(matches!(
            charge("sim_approve", 0),
            ProviderAnswer::Approved { .. }
        ));
        assert!(matches!(
            charge("sim_decline", 0),
            ProviderAnswer::Declined { .. }
        ));
        assert!(matches!(
            charge("sim_down", 7),
            ProviderAnswer::Transient { .. }
        ));
        assert!(matches!(
            charge("sim_slow_1", 0),
            ProviderAnswer::Approved { .. }
        ));
        assert!(matches!(
            charge("paypal", 0),
            ProviderAnswer::UnsupportedMethod { .. }
        ));
        assert!(matches!(
            charge("sim_transient_x", 0),
            ProviderAnswer::UnsupportedMethod { .. }
        ));
        assert!(matches!(
            charge("sim_slow_", 0),
            ProviderAnswer::UnsupportedMethod { .. }
        ));
    }

    #[test]
    fn transient_n_fails_the_first_n_attempts() {
        assert!(matches!(
            charge("sim_transient_2", 0),
            ProviderAnswer::Transient { .. }
        ));
        assert!(matches!(
            charge("sim_transient_2", 1),
            ProviderAnswer::Transient { .. }
        ));
        assert!(matches!(
            charge("sim_transient_2", 2),
            ProviderAnswer::Approved { .. }
        ));
        assert!(matches!(
            charge("sim_transient_0", 0),
            ProviderAnswer::Approved { .. }
        ));
    }

    #[test]
    fn slow_is_capped() {
        assert_eq!(
            Behaviour::of("sim_slow_99999999"),
            Some(Behaviour::Slow(MAX_SLOW))
        );
    }
}
