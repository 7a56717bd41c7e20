//! Who is checking out, as the shop names its customer.

use serde::{Deserialize, Serialize};

use super::checked_text;

/// 1 to 128 characters, not blank, no control characters. Opaque
/// otherwise: the shop chooses its ids.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CustomerId(String);

checked_text!(CustomerId, "customer_id", 128);
