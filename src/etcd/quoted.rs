//! Go's `%q`, undone: etcdctl hands a watch's key, event type and value
//! to its command quoted this way (`"/hacfg/nodes/s1"`, quotes included).
//! Strict: only what Go's quoting writes is read back, anything else is
//! an error, so a value is never half-understood.

use anyhow::{Result, bail, ensure};

use crate::quote::quote;

/// The bytes `text` quotes (a value may be any bytes: `\xNN` escapes
/// what is no UTF-8).
pub fn unquote(text: &str) -> Result<Vec<u8>> {
    let inner = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .filter(|_| text.len() >= 2);
    let Some(inner) = inner else {
        bail!("{} is not Go-quoted: no quotes around it", shown(text));
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => escape(&mut chars, &mut out).map_err(|e| e.context(shown(text)))?,
            '"' => bail!("{}: a quote inside is not escaped", shown(text)),
            c if c.is_control() => bail!("{}: control character {c:?} is not escaped", shown(text)),
            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    Ok(out)
}

/// The quoted text in messages: escaped, and cut when long.
fn shown(text: &str) -> String {
    quote(text).to_string()
}

/// One escape after its `\`, appended to `out`.
fn escape(chars: &mut std::str::Chars, out: &mut Vec<u8>) -> Result<()> {
    let byte = match chars.next() {
        Some('a') => 7,
        Some('b') => 8,
        Some('f') => 12,
        Some('n') => b'\n',
        Some('r') => b'\r',
        Some('t') => b'\t',
        Some('v') => 11,
        Some('\\') => b'\\',
        Some('"') => b'"',
        Some('x') => {
            let n = hex(chars, 2)?;
            out.push(u8::try_from(n).unwrap_or_default());
            return Ok(());
        }
        Some(u @ ('u' | 'U')) => {
            let n = hex(chars, if u == 'u' { 4 } else { 8 })?;
            let Some(c) = char::from_u32(n) else {
                bail!("escape \\{u}{n:X} is no Unicode scalar value");
            };
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            return Ok(());
        }
        Some(other) => bail!("unknown escape \\{}", other.escape_debug()),
        None => bail!("it ends in a lone backslash"),
    };
    out.push(byte);
    Ok(())
}

/// `digits` hex digits, exactly.
fn hex(chars: &mut std::str::Chars, digits: usize) -> Result<u32> {
    let mut n: u32 = 0;
    for _ in 0..digits {
        let d = chars.next().and_then(|c| c.to_digit(16));
        ensure!(d.is_some(), "an escape needs {digits} hex digits");
        n = (n << 4) | d.unwrap_or_default();
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_go_writes_reads_back() {
        assert_eq!(unquote(r#""/hacfg/nodes/s1""#).unwrap(), b"/hacfg/nodes/s1");
        assert_eq!(unquote(r#""""#).unwrap(), b"");
        assert_eq!(
            unquote(r#""{\"address\":\"10.0.0.1\"}""#).unwrap(),
            br#"{"address":"10.0.0.1"}"#
        );
        // fmt.Sprintf("%q", []byte("a\x01b\tc\xff€\"\\\n\x7f"))
        assert_eq!(
            unquote(r#""a\x01b\tc\xff€\"\\\n\x7f""#).unwrap(),
            b"a\x01b\tc\xff\xe2\x82\xac\"\\\n\x7f"
        );
        assert_eq!(unquote(r#""\a\b\f\v\r""#).unwrap(), b"\x07\x08\x0c\x0b\r");
        assert_eq!(
            unquote(r#""\u200b\U0001f600""#).unwrap(),
            "\u{200b}😀".as_bytes()
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for text in [
            "",
            "\"",
            "plain",
            "\"unterminated",
            "'single'",
            r#""a"b""#,
            r#""\q""#,
            r#""\x4""#,
            r#""\xZZ""#,
            r#""\ud800""#,
            r#""\U00110000""#,
            r#""\101""#,
            r#""ends\""#,
            "\"tab\there\"",
            "\"new\nline\"",
        ] {
            assert!(unquote(text).is_err(), "{text:?}");
        }
        let err = format!("{:#}", unquote(r#""a\qb""#).unwrap_err());
        assert!(err.contains("unknown escape \\q"), "{err}");
    }
}
