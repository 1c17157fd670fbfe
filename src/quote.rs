//! Showing untrusted values in messages: escaped (a newline shows as `\n`),
//! and cut to a readable length, so a 1 GiB node file or member line never
//! becomes a 1 GiB error message.

use std::fmt;

/// Bytes of a value shown before it is cut.
pub const SHOWN: usize = 200;

/// `value` as a quoted, escaped string, cut after `SHOWN` bytes:
/// `"abc…" (12345 bytes)`.
pub struct Quoted<'a>(&'a str);

pub fn quote(value: &str) -> Quoted<'_> {
    Quoted(value)
}

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.0;
        match cut(value, SHOWN) {
            Some(head) => write!(f, "{head:?}… ({} bytes)", value.len()),
            None => write!(f, "{value:?}"),
        }
    }
}

/// The first `max` bytes of `value` (at a char boundary), if it is longer.
pub fn cut(value: &str, max: usize) -> Option<&str> {
    if value.len() <= max {
        return None;
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    Some(&value[..end])
}

/// `text` whole, or its first `max` bytes and its length: `abc… (12345
/// bytes)`. For a message that may carry untrusted text unescaped (a
/// parser's error, a command's output).
pub fn shorten(text: &str, max: usize) -> String {
    match cut(text, max) {
        Some(head) => format!("{head}… ({} bytes)", text.len()),
        None => text.to_string(),
    }
}

/// Untrusted bytes (a file's content, a socket's answer) shown the same way.
pub fn quote_bytes(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(SHOWN)];
    let text = String::from_utf8_lossy(cut);
    if bytes.len() > SHOWN {
        format!("{text:?}… ({} bytes)", bytes.len())
    } else {
        format!("{text:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_keeps_short_text_and_names_a_long_ones_length() {
        assert_eq!(shorten("abc", 5), "abc");
        assert_eq!(shorten("abcdef", 3), "abc… (6 bytes)");
        assert_eq!(shorten("ééé", 3), "é… (6 bytes)");
    }

    #[test]
    fn short_values_are_escaped_whole() {
        assert_eq!(quote("s1\nx").to_string(), r#""s1\nx""#);
    }

    #[test]
    fn long_values_are_cut_on_a_char_boundary() {
        let long = "é".repeat(1000);
        let shown = quote(&long).to_string();
        assert!(shown.ends_with("… (2000 bytes)"), "{shown}");
        assert!(shown.len() < SHOWN + 30, "{shown}");
        let shown = quote_bytes(&vec![b'a'; 1 << 20]);
        assert!(shown.ends_with("… (1048576 bytes)"), "{shown}");
    }
}
