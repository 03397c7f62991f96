//! Text buffers for secrets (private and preshared keys on their way to stdout or a file):
//! wiped when dropped, and grown without leaving copies behind. A plain `String` or `Vec`
//! that outgrows its allocation moves to a new one and frees the old one as it is, key text
//! included; these move the text themselves and wipe the old allocation first.

use zeroize::Zeroizing;

pub use crate::config::extend_wiping;
pub use ferrowg_uapi::SecretText;

/// A key's base64 text, wiped on drop, for writing into a [`SecretText`].
pub fn base64_secret(key: &[u8; 32]) -> Zeroizing<String> {
    // `encode_base64_key` builds its text in a wiped stack buffer and returns an exact-size
    // copy: this is the only copy left.
    Zeroizing::new(ferrowg_proto::keys::encode_base64_key(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;

    #[test]
    fn secret_text_keeps_everything_across_growth() {
        let mut text = SecretText::with_capacity(0);
        let mut expected = String::new();
        for i in 0..400 {
            let _ = write!(text, "{i},");
            expected.push_str(&format!("{i},"));
        }
        assert_eq!(text.as_str(), expected);
        assert_eq!(text.into_inner().as_str(), expected);
    }

    #[test]
    fn extend_wiping_keeps_everything_across_growth() {
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        for i in 0..300u32 {
            let chunk = i.to_be_bytes();
            extend_wiping(&mut bytes, &chunk[i as usize % 4..]);
            expected.extend_from_slice(&chunk[i as usize % 4..]);
        }
        assert_eq!(bytes, expected);
    }
}
