//! Colours for `show`'s pretty form, decided and stripped the way `wg` does it.
//!
//! The text is always composed *with* escape sequences; when colour is off they are filtered
//! out of each piece before it is written. Doing it this way round (rather than composing two
//! variants) keeps one source of truth for the layout, and it reproduces `wg` exactly even in
//! odd cases, because `wg` filters the same way: a sequence is `ESC [` followed by anything up
//! to and including the first ASCII letter, and data (an interface name, say) that happens to
//! contain such a sequence loses it too.

use std::io::IsTerminal;

pub const RESET: &str = "\x1b[0m";
pub const BOLD: &str = "\x1b[1m";
pub const FG_RED: &str = "\x1b[31m";
pub const FG_GREEN: &str = "\x1b[32m";
pub const FG_YELLOW: &str = "\x1b[33m";
pub const FG_CYAN: &str = "\x1b[36m";

/// `WG_COLOR_MODE=always` forces colour, `=never` forbids it, anything else (or unset) means
/// "only when stdout is a terminal".
pub fn colour_wanted() -> bool {
    match std::env::var_os("WG_COLOR_MODE") {
        Some(v) if v == "always" => true,
        Some(v) if v == "never" => false,
        _ => std::io::stdout().is_terminal(),
    }
}

/// Collects the pretty output, piece by piece, colour-filtered as it goes.
pub struct Painter {
    colour: bool,
    out: Vec<u8>,
}

impl Painter {
    pub fn new(colour: bool) -> Self {
        Painter {
            colour,
            out: Vec::new(),
        }
    }

    /// Appends one piece of text (what `wg` writes in one formatted print). Filtering is per
    /// piece, as in `wg`, which matters only at the very end of a piece (see [`strip_ansi`]).
    pub fn put(&mut self, piece: &str) {
        if self.colour {
            self.out.extend_from_slice(piece.as_bytes());
        } else {
            self.out.extend_from_slice(&strip_ansi(piece.as_bytes()));
        }
    }

    /// The text so far, emptying the buffer.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}

/// `wg`'s filter, byte for byte: an `ESC [` that starts at least two bytes before the end of
/// the piece is removed together with everything after it up to and including the first
/// ASCII letter (or to the end if there is none). An `ESC [` in the last two bytes stays.
pub fn strip_ansi(piece: &[u8]) -> Vec<u8> {
    let mut keep = vec![true; piece.len()];
    let mut i = 0;
    while i + 2 < piece.len() {
        if piece[i] == 0x1b && piece[i + 1] == b'[' {
            let mut j = i + 2;
            while j < piece.len() && !piece[j].is_ascii_alphabetic() {
                j += 1;
            }
            let end = (j + 1).min(piece.len());
            keep[i..end].iter_mut().for_each(|k| *k = false);
            i = end;
        } else {
            i += 1;
        }
    }
    piece
        .iter()
        .zip(keep)
        .filter_map(|(&b, k)| k.then_some(b))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_complete_sequences_only() {
        assert_eq!(strip_ansi(b"\x1b[0m\x1b[32mwg0\x1b[0m\n"), b"wg0\n");
        assert_eq!(strip_ansi(b"a\x1b[1;31mb"), b"ab");
        // No letter: everything from the sequence on goes.
        assert_eq!(strip_ansi(b"a\x1b[123"), b"a");
        // Too close to the end to be looked at.
        assert_eq!(strip_ansi(b"a\x1b["), b"a\x1b[");
        assert_eq!(strip_ansi(b"\x1bx\x1b[m"), b"\x1bx");
    }

    #[test]
    fn painter_keeps_colour_when_asked() {
        let mut p = Painter::new(true);
        p.put(&format!("{BOLD}x{RESET}"));
        assert_eq!(p.take(), b"\x1b[1mx\x1b[0m");
        let mut p = Painter::new(false);
        p.put(&format!("{BOLD}x{RESET}"));
        assert_eq!(p.take(), b"x");
    }
}
