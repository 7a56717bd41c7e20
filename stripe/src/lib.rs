//! Stripe's API, the part this product uses: PaymentIntents created
//! unconfirmed, confirmed by id, retrieved, cancelled and listed, and
//! refunds by PaymentIntent. Every answer is read tolerantly (fields this
//! build does not know are ignored, a missing optional field is a default)
//! and every failure is sorted into what the caller does next
//! ([`StripeError`]). The secret key never leaves [`Client`] in a message.

mod client;
mod error;
mod intent;

pub use client::{Client, ClientError, NewIntent, DEFAULT_API_BASE};
pub use error::StripeError;
pub use intent::{IntentStatus, PaymentIntent, Refund};
