//! Client keys: random, so a plain SHA-256 digest is enough to store them
//! (nothing to brute-force), compared in constant time, never printed.

pub use crate::named_secrets::digest;
use crate::named_secrets::{self, NamedSecrets, SecretDigest, SecretList, SecretRules};

pub const NAME_RULE: &str = "1 to 64 of A-Z a-z 0-9 . _ -";
const NAME_PUNCTUATION: &str = "._-";

pub type KeyDigest = SecretDigest;

/// A client name: no `:`, which separates the client from its
/// idempotency key in the stored key.
pub fn valid_name(name: &str) -> bool {
    named_secrets::valid_name(name, NAME_PUNCTUATION)
}

/// A new key: 256 random bits, hex, with a prefix that tells a leaked key
/// for what it is in a scanner's report.
pub fn generate_key() -> String {
    let bytes: [u8; 32] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("ck_{hex}")
}

#[derive(Clone, Default)]
pub struct Seeded;

impl SecretList for Seeded {
    const NAME: &'static str = "SeededKeys";
    const RULES: SecretRules = SecretRules {
        var: "CHECKOUT_CLIENT_KEYS",
        secret: "key",
        // A seeded key shorter than this is guessable, or a misconfiguration.
        min_chars: 16,
        name_punctuation: NAME_PUNCTUATION,
        name_rule: NAME_RULE,
    };
}

/// `CHECKOUT_CLIENT_KEYS=name=key,…`: clients created (or given this key)
/// at start, as digests only.
pub type SeededKeys = NamedSecrets<Seeded>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_and_debug_never_show_a_key() {
        for bad in [
            "shop",
            "shop=k3y",
            "a:b=k3y-long-enough-1234",
            "x=k3y-long-enough-1234,x=k3z-long-enough-1234",
            "x=k3y-long-enough-1234,y=k3y-long-enough-1234",
        ] {
            let error = SeededKeys::parse(bad).unwrap_err();
            assert!(!error.contains("k3y"), "{bad}: {error}");
        }
        let keys = SeededKeys::parse("shop=k3y-long-enough-1234").unwrap();
        let shown = format!("{keys:?}");
        assert!(shown.contains("shop") && !shown.contains("k3y"), "{shown}");
    }

    #[test]
    fn generated_keys_differ_and_are_long() {
        let (a, b) = (generate_key(), generate_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 64);
    }
}
