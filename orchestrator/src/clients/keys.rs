//! Client keys: random, so a plain SHA-256 digest is enough to store them
//! (nothing to brute-force), compared in constant time, never printed.

use saga_shared::config::{ConfigError, Source};
use sha2::{Digest, Sha256};

const VAR: &str = "CHECKOUT_CLIENT_KEYS";
/// A seeded key shorter than this is guessable, or a misconfiguration.
const MIN_KEY_CHARS: usize = 16;
pub const NAME_RULE: &str = "1 to 64 of A-Z a-z 0-9 . _ -";

pub type KeyDigest = [u8; 32];

pub fn digest(key: &str) -> KeyDigest {
    Sha256::digest(key.as_bytes()).into()
}

/// A client name: no `:`, which separates the client from its
/// idempotency key in the stored key.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// A new key: 256 random bits, hex, with a prefix that tells a leaked key
/// for what it is in a scanner's report.
pub fn generate_key() -> String {
    let bytes: [u8; 32] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("ck_{hex}")
}

/// `CHECKOUT_CLIENT_KEYS=name=key,…`: clients created (or given this key)
/// at start, as digests only.
#[derive(Clone, Default)]
pub struct SeededKeys {
    entries: Vec<(String, KeyDigest)>,
}

impl std::fmt::Debug for SeededKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("SeededKeys").field("names", &names).finish()
    }
}

impl SeededKeys {
    /// Errors name the entry by position, never by content: it holds a key.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys = SeededKeys::default();
        for (i, entry) in text.split(',').map(str::trim).enumerate() {
            let position = i + 1;
            if entry.is_empty() {
                continue;
            }
            let (name, key) = entry
                .split_once('=')
                .ok_or_else(|| format!("entry {position} is not `name=key`"))?;
            let (name, key) = (name.trim(), key.trim());
            if !valid_name(name) {
                return Err(format!("entry {position}: the name must be {NAME_RULE}"));
            }
            if key.chars().count() < MIN_KEY_CHARS {
                return Err(format!(
                    "entry {position}: the key is shorter than {MIN_KEY_CHARS} characters"
                ));
            }
            if keys.entries.iter().any(|(n, _)| n == name) {
                return Err(format!("entry {position}: its name appears twice"));
            }
            let hashed = digest(key);
            if keys.entries.iter().any(|(_, d)| *d == hashed) {
                return Err(format!("entry {position} reuses another entry's key"));
            }
            keys.entries.push((name.to_owned(), hashed));
        }
        Ok(keys)
    }

    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        match source.get(VAR) {
            None => Ok(SeededKeys::default()),
            Some(text) => SeededKeys::parse(&text)
                .map_err(|reason| ConfigError::Invalid { name: VAR, reason }),
        }
    }

    pub fn entries(&self) -> &[(String, KeyDigest)] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

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
