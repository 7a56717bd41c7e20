//! The `name=secret,name=secret` lists of the environment (support tokens,
//! seeded client keys): each secret kept only as its SHA-256 digest, and
//! every error naming its entry by position, never by content, which holds
//! a secret.

use std::marker::PhantomData;

use saga_shared::config::{ConfigError, Source};
use sha2::{Digest, Sha256};

pub type SecretDigest = [u8; 32];

pub fn digest(secret: &str) -> SecretDigest {
    Sha256::digest(secret.as_bytes()).into()
}

/// What one list calls its secrets and what it takes of its entries.
pub struct SecretRules {
    /// The environment variable that holds the list.
    pub var: &'static str,
    /// What a secret is called in the errors: `token`, `key`.
    pub secret: &'static str,
    /// Shorter secrets are guessable, or a misconfiguration.
    pub min_chars: usize,
    /// What a name may hold besides ASCII letters and digits.
    pub name_punctuation: &'static str,
    /// The names it takes, in words, for the errors.
    pub name_rule: &'static str,
}

/// 1 to 64 ASCII letters, digits and `punctuation`.
pub fn valid_name(name: &str, punctuation: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || punctuation.contains(c))
}

/// One kind of list: its rules, and its name in a `Debug`.
pub trait SecretList {
    const NAME: &'static str;
    const RULES: SecretRules;
}

/// The names of a list and the digests of their secrets, in order.
#[derive(Clone, Default)]
pub struct NamedSecrets<L> {
    entries: Vec<(String, SecretDigest)>,
    list: PhantomData<L>,
}

/// The names alone: the secrets are never printed, not even as digests.
impl<L: SecretList> std::fmt::Debug for NamedSecrets<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct(L::NAME).field("names", &names).finish()
    }
}

impl<L: SecretList + Default> NamedSecrets<L> {
    /// Parses `name=secret,name=secret`: no name twice, no secret twice.
    pub fn parse(text: &str) -> Result<Self, String> {
        let rules = &L::RULES;
        let secret = rules.secret;
        let mut list = NamedSecrets::default();
        for (i, entry) in text.split(',').map(str::trim).enumerate() {
            let position = i + 1;
            if entry.is_empty() {
                continue;
            }
            let (name, value) = entry
                .split_once('=')
                .ok_or_else(|| format!("entry {position} is not `name={secret}`"))?;
            let (name, value) = (name.trim(), value.trim());
            if !valid_name(name, rules.name_punctuation) {
                return Err(format!(
                    "entry {position}: the name must be {}",
                    rules.name_rule
                ));
            }
            // The messages never quote the entry: a bare secret with `=`
            // in it (base64) would be split into a "name" that is secret.
            if value.chars().count() < rules.min_chars {
                return Err(format!(
                    "entry {position}: the {secret} is shorter than {} characters",
                    rules.min_chars
                ));
            }
            if list.entries.iter().any(|(n, _)| n == name) {
                return Err(format!("entry {position}: its name appears twice"));
            }
            let hashed = digest(value);
            if list.entries.iter().any(|(_, d)| *d == hashed) {
                return Err(format!("entry {position} reuses another entry's {secret}"));
            }
            list.entries.push((name.to_owned(), hashed));
        }
        Ok(list)
    }

    /// The list in its variable; unset, an empty one.
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let var = L::RULES.var;
        match source.get(var) {
            None => Ok(NamedSecrets::default()),
            Some(text) => NamedSecrets::parse(&text)
                .map_err(|reason| ConfigError::Invalid { name: var, reason }),
        }
    }

    pub fn entries(&self) -> &[(String, SecretDigest)] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
