//! Support staff's bearer tokens. Each token has a name, the actor recorded
//! in the timeline. Tokens are kept only as SHA-256 digests and compared in
//! constant time; no token is ever printed.

use saga_shared::config::{ConfigError, Source};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const VAR: &str = "ADMIN_TOKENS";
/// Shorter tokens are guessable, and a short "token" is most often a
/// misconfiguration (a bare base64 token split at its `=` padding).
const MIN_TOKEN_CHARS: usize = 12;

#[derive(Clone, Default)]
pub struct AdminTokens {
    entries: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for AdminTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("AdminTokens")
            .field("names", &names)
            .finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl AdminTokens {
    /// Parses `name=token,name=token`. Errors name the entry by position,
    /// never by content: the content holds a secret.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut tokens = AdminTokens::default();
        for (i, entry) in text.split(',').map(str::trim).enumerate() {
            let position = i + 1;
            if entry.is_empty() {
                continue;
            }
            let (name, token) = entry
                .split_once('=')
                .ok_or_else(|| format!("entry {position} is not `name=token`"))?;
            let (name, token) = (name.trim(), token.trim());
            if name.is_empty()
                || name.len() > 64
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c))
            {
                return Err(format!(
                    "entry {position}: the name must be 1 to 64 of A-Z a-z 0-9 . _ @ -"
                ));
            }
            // The messages never quote the entry: a bare token with `=`
            // in it (base64) would be split into a "name" that is secret.
            if token.chars().count() < MIN_TOKEN_CHARS {
                return Err(format!(
                    "entry {position}: the token is shorter than {MIN_TOKEN_CHARS} characters"
                ));
            }
            if tokens.entries.iter().any(|(n, _)| n == name) {
                return Err(format!("entry {position}: its name appears twice"));
            }
            let hashed = digest(token);
            if tokens.entries.iter().any(|(_, d)| *d == hashed) {
                return Err(format!("entry {position} reuses another entry's token"));
            }
            tokens.entries.push((name.to_owned(), hashed));
        }
        Ok(tokens)
    }

    /// `ADMIN_TOKENS`; unset means no one can use the support API.
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        match source.get(VAR) {
            None => Ok(AdminTokens::default()),
            Some(text) => AdminTokens::parse(&text)
                .map_err(|reason| ConfigError::Invalid { name: VAR, reason }),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The name of the token presented, if it is one of ours. Every entry
    /// is compared, each in constant time, so timing tells nothing about
    /// which token (or how much of one) matched.
    pub fn actor(&self, presented: &str) -> Option<&str> {
        let presented = digest(presented);
        let mut found = None;
        for (name, expected) in &self.entries {
            if bool::from(expected.ct_eq(&presented)) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_finds_the_actor() {
        let tokens = AdminTokens::parse("alice=s3cret-token-a, bob=s3cret-token-b").unwrap();
        assert_eq!(tokens.actor("s3cret-token-b"), Some("bob"));
        assert_eq!(tokens.actor("s3cret-token-"), None);
        assert_eq!(tokens.actor(""), None);
    }

    #[test]
    fn errors_and_debug_never_show_a_token() {
        for bad in [
            "alice",
            "=tok3n-long-enough",
            "alice=",
            "alice=tok3n",
            "a b=tok3n-long-enough",
            "x=tok3n-long-enough,x=tok3m-long-enough",
            "x=tok3n-long-enough,y=tok3n-long-enough",
            // A bare base64 token: never echoed, whichever way it splits.
            "c2VjcmV0tok3n=",
            "c2VjcmV0tok3n==",
        ] {
            let error = AdminTokens::parse(bad).unwrap_err();
            assert!(!error.contains("tok3n"), "{bad}: {error}");
        }
        let tokens = AdminTokens::parse("alice=tok3n-long-enough").unwrap();
        let shown = format!("{tokens:?}");
        assert!(
            shown.contains("alice") && !shown.contains("tok3n"),
            "{shown}"
        );
    }
}
