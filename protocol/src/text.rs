//! Text taken from a message, made safe to keep and show.

use std::borrow::Cow;

/// `text` with every control character (NUL included, which PostgreSQL
/// text cannot hold) replaced by U+FFFD, so that a reason or a preview
/// taken from a message can always be stored and shown.
pub fn printable(text: &str) -> Cow<'_, str> {
    if text.chars().any(char::is_control) {
        Cow::Owned(
            text.chars()
                .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_replaced() {
        assert_eq!(printable("a\0b\u{7}c\nd"), "a\u{FFFD}b\u{FFFD}c\u{FFFD}d");
        assert!(matches!(printable("plain text é"), Cow::Borrowed(_)));
    }
}
