//! Writing JSON text directly into a byte buffer, for the few values every heartbeat
//! writes (the token's plaintext, the analytics index keys, the 200 answer): the bytes are
//! exactly `serde_json`'s, without its generic escaper looking at text that needs none.
//!
//! ```
//! let mut out = Vec::new();
//! heartbeat_core::json::write_str(&mut out, "plain");
//! heartbeat_core::json::write_str(&mut out, "say \"hi\"\n");
//! assert_eq!(out, br#""plain""say \"hi\"\n""#);
//! ```

/// True when JSON must escape a byte of `text` (a control character, `"` or `\`).
pub fn needs_escaping(text: &str) -> bool {
    // A fold without an early exit: the compiler checks many bytes at once.
    text.bytes().fold(false, |found, byte| {
        found | (byte < 0x20) | (byte == b'"') | (byte == b'\\')
    })
}

/// Appends `text` as a JSON string, quoted and escaped as `serde_json` writes it.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    if needs_escaping(text) {
        // Writing into a `Vec` cannot fail, and a `str` always serializes.
        let _ = serde_json::to_writer(&mut *out, text);
    } else {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

/// Appends an integer as JSON writes it.
pub fn write_int(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        let mut texts: Vec<String> = [
            "",
            "a",
            "é ü 漢字 🎬",
            "tab\there",
            "quote\"",
            "back\\slash",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        texts.extend((0u8..0x80).map(|byte| format!("x{}y", byte as char)));
        for text in texts {
            let mut out = Vec::new();
            write_str(&mut out, &text);
            assert_eq!(out, serde_json::to_vec(&text).unwrap(), "{text:?}");
        }
    }

    #[test]
    fn integers_are_written_as_serde_json_writes_them() {
        for n in [0i64, 7, -7, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            write_int(&mut out, n);
            assert_eq!(out, serde_json::to_vec(&n).unwrap());
        }
    }
}
