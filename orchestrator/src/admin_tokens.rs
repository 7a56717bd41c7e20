//! Support staff's bearer tokens. Each token has a name, the actor recorded
//! in the timeline. Tokens are kept only as SHA-256 digests and compared in
//! constant time; no token is ever printed.

use subtle::ConstantTimeEq;

use crate::named_secrets::{digest, NamedSecrets, SecretList, SecretRules};

#[derive(Clone, Default)]
pub struct SupportTokens;

impl SecretList for SupportTokens {
    const NAME: &'static str = "AdminTokens";
    const RULES: SecretRules = SecretRules {
        var: "ADMIN_TOKENS",
        secret: "token",
        // Shorter tokens are guessable, and a short "token" is most often a
        // misconfiguration (a bare base64 token split at its `=` padding).
        min_chars: 12,
        name_punctuation: "._@-",
        name_rule: "1 to 64 of A-Z a-z 0-9 . _ @ -",
    };
}

/// `ADMIN_TOKENS=name=token,…`; unset means no one can use the support API.
pub type AdminTokens = NamedSecrets<SupportTokens>;

impl AdminTokens {
    /// The name of the token presented, if it is one of ours. Every entry
    /// is compared, each in constant time, so timing tells nothing about
    /// which token (or how much of one) matched.
    pub fn actor(&self, presented: &str) -> Option<&str> {
        let presented = digest(presented);
        let mut found = None;
        for (name, expected) in self.entries() {
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
