//! Text that came from an image, an archive or a registry, on its way to a terminal or a log:
//! control characters are shown as escapes, so `ESC[2J` in a registry's error body or a tar
//! entry's name prints as `\x1b[2J` instead of clearing the screen.

use std::fmt::{Display, Write};

/// Longer untrusted text is cut (a hostile error body or path can be megabytes long).
const MAX_SHOWN_CHARS: usize = 1024;

/// `s` with C0 controls, DEL and C1 controls escaped (`\n` → `\x0a`, U+009B → `\u{9b}`),
/// cut after [`MAX_SHOWN_CHARS`] characters. Backslashes are left alone, so escaping twice
/// changes nothing.
pub fn escape_untrusted(s: impl Display) -> String {
    let s = s.to_string();
    let mut out = String::with_capacity(s.len().min(MAX_SHOWN_CHARS + 16));
    for (i, c) in s.chars().enumerate() {
        if i == MAX_SHOWN_CHARS {
            out.push('…');
            break;
        }
        match c as u32 {
            0x00..=0x1f | 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            0x80..=0x9f => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            _ => out.push(c),
        }
    }
    out
}

/// Bytes in Docker's decimal units (`999B`, `1.1MB` with one decimal, `1.024kB` with three).
pub fn human_size(bytes: u64, decimals: usize) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.decimals$}{}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_long_text_cut() {
        assert_eq!(
            escape_untrusted("a\x1b[2Jb\n\u{9b}c\x7f"),
            "a\\x1b[2Jb\\x0a\\u{9b}c\\x7f"
        );
        assert_eq!(escape_untrusted("plain ünïcode/path"), "plain ünïcode/path");
        let once = escape_untrusted("x\x1by");
        assert_eq!(escape_untrusted(&once), once);
        let long = escape_untrusted("a".repeat(1 << 20));
        assert_eq!(long.chars().count(), MAX_SHOWN_CHARS + 1);
    }
}
