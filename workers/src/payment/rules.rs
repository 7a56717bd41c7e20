//! What the payment worker's answers mean, decided without storage: which
//! amounts a charge may have, and what a provider's answer to a charge or a
//! refund means for the saga's payment.

use saga_protocol::messages::reason;
use saga_protocol::values::Cents;
use uuid::Uuid;

use super::provider::ProviderAnswer;

/// Why `amount_cents` can never be charged, given the largest charge.
pub fn invalid_amount(amount_cents: Cents, max_cents: i64) -> Option<String> {
    let amount_cents = amount_cents.get();
    if amount_cents <= 0 {
        Some(format!("amount_cents {amount_cents} is not positive"))
    } else if amount_cents > max_cents {
        Some(format!(
            "amount_cents {amount_cents} is above the maximum charge of {max_cents} (PAYMENT_MAX_AMOUNT_CENTS)"
        ))
    } else {
        None
    }
}

/// Why `method` is refused: a `sim_*` method while the simulator is off
/// (`PAYMENT_PROVIDER` is not `simulator`).
pub fn simulator_refused(method: &str, simulator: bool) -> Option<String> {
    (!simulator && method.starts_with("sim_")).then(|| {
        format!(
            "payment method `{method}` belongs to the payment simulator, a test double that is off (PAYMENT_PROVIDER=simulator enables it)"
        )
    })
}

/// What a provider's answer to a charge means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeVerdict {
    Charged {
        reference: Uuid,
        amount_cents: Cents,
    },
    /// A final no: nothing moved and nothing will under this key.
    Declined {
        reason: &'static str,
        detail: String,
    },
    /// No definite answer: the intent stays open and the step retries.
    /// `provider_failed` counts towards the saga's transient failures.
    Open {
        error: String,
        provider_failed: bool,
    },
}

pub fn charge_verdict(answer: ProviderAnswer) -> ChargeVerdict {
    match answer {
        ProviderAnswer::Approved {
            reference,
            amount_cents,
        } => ChargeVerdict::Charged {
            reference,
            amount_cents,
        },
        ProviderAnswer::Declined { reason: detail } => ChargeVerdict::Declined {
            reason: reason::PAYMENT_DECLINED,
            detail,
        },
        ProviderAnswer::Refused { reason, detail } => ChargeVerdict::Declined { reason, detail },
        // The key may hold an approved charge of the other amount, so this
        // is no definite "nothing moved" (a rejection would skip the
        // refund): the saga parks for support if it never clears.
        ProviderAnswer::KeyReused { error } => ChargeVerdict::Open {
            error,
            provider_failed: false,
        },
        ProviderAnswer::Transient { error } => ChargeVerdict::Open {
            error,
            provider_failed: true,
        },
    }
}

/// What a provider's answer to a refund means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundVerdict {
    Refunded {
        amount_cents: Cents,
    },
    /// Money charged must go back: a compensation has no business "no", so
    /// the step retries (and the saga parks for support if it never clears).
    Open {
        error: String,
    },
}

/// `charged_cents`: what our books say an approved charge moved, `None`
/// when no charge of this saga was approved by the provider.
pub fn refund_verdict(answer: ProviderAnswer, charged_cents: Option<Cents>) -> RefundVerdict {
    let refused = |why: String| RefundVerdict::Open {
        error: format!("the provider refused the refund: {why}"),
    };
    match answer {
        // A charge approved by the provider returns nothing only if the
        // provider lost it (a ledger that predates the charge): refunding
        // 0 would keep the customer's money, so it is not an answer.
        ProviderAnswer::Approved {
            amount_cents: Cents::ZERO,
            ..
        } if charged_cents.is_some_and(|c| c > Cents::ZERO) => RefundVerdict::Open {
            error: format!(
                "the provider refunded nothing of a charge of {} it approved",
                charged_cents.unwrap_or_default()
            ),
        },
        // Cancel or refund returns everything that moved under the charge
        // key, so what was charged is what is refunded.
        ProviderAnswer::Approved { amount_cents, .. } => RefundVerdict::Refunded { amount_cents },
        ProviderAnswer::Transient { error } => RefundVerdict::Open { error },
        ProviderAnswer::Declined { reason } => refused(reason),
        ProviderAnswer::KeyReused { error } => refused(error),
        ProviderAnswer::Refused { detail, .. } => refused(detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approved(amount_cents: i64) -> ProviderAnswer {
        ProviderAnswer::Approved {
            reference: Uuid::nil(),
            amount_cents: Cents::new(amount_cents),
        }
    }

    #[test]
    fn amounts_must_be_positive_and_at_most_the_maximum() {
        let invalid = |amount: i64, max: i64| invalid_amount(Cents::new(amount), max);
        assert!(invalid(0, 100).unwrap().contains("not positive"));
        assert!(invalid(-5, 100).unwrap().contains("not positive"));
        assert!(invalid(101, 100).unwrap().contains("maximum charge of 100"));
        assert_eq!(invalid(100, 100), None);
        assert_eq!(invalid(1, 100), None);
    }

    #[test]
    fn sim_methods_need_the_simulator() {
        assert!(simulator_refused("sim_approve", false)
            .unwrap()
            .contains("PAYMENT_PROVIDER=simulator"));
        assert_eq!(simulator_refused("sim_approve", true), None);
        assert_eq!(simulator_refused("card", false), None);
    }

    #[test]
    fn a_charge_answer_is_charged_declined_or_left_open() {
        assert_eq!(
            charge_verdict(approved(700)),
            ChargeVerdict::Charged {
                reference: Uuid::nil(),
                amount_cents: Cents::new(700)
            }
        );
        let declined = charge_verdict(ProviderAnswer::Refused {
            reason: reason::INVALID_PAYMENT_METHOD,
            detail: "payment method `cash` is not supported".into(),
        });
        assert!(matches!(
            declined,
            ChargeVerdict::Declined { reason, ref detail }
                if reason == reason::INVALID_PAYMENT_METHOD && detail.contains("cash")
        ));
        assert!(matches!(
            charge_verdict(ProviderAnswer::KeyReused { error: "x".into() }),
            ChargeVerdict::Open {
                provider_failed: false,
                ..
            }
        ));
        assert!(matches!(
            charge_verdict(ProviderAnswer::Transient { error: "x".into() }),
            ChargeVerdict::Open {
                provider_failed: true,
                ..
            }
        ));
    }

    #[test]
    fn nothing_refunded_of_an_approved_charge_is_not_an_answer() {
        assert!(matches!(
            refund_verdict(approved(0), Some(Cents::new(1200))),
            RefundVerdict::Open { error } if error.contains("1200")
        ));
        // A charge that never reached the provider is voided: 0 is right.
        assert_eq!(
            refund_verdict(approved(0), None),
            RefundVerdict::Refunded {
                amount_cents: Cents::ZERO
            }
        );
        assert_eq!(
            refund_verdict(approved(1200), Some(Cents::new(1200))),
            RefundVerdict::Refunded {
                amount_cents: Cents::new(1200)
            }
        );
    }

    #[test]
    fn a_refused_refund_is_retried_not_accepted() {
        for answer in [
            ProviderAnswer::Declined {
                reason: "no".into(),
            },
            ProviderAnswer::KeyReused { error: "no".into() },
            ProviderAnswer::Transient {
                error: "down".into(),
            },
        ] {
            assert!(matches!(
                refund_verdict(answer, Some(Cents::new(5))),
                RefundVerdict::Open { .. }
            ));
        }
    }
}
