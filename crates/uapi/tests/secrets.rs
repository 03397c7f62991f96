//! Secrets in the model and the messages: wiped when dropped, never in `Debug` or error text.

use ferrowg_uapi::{
    errno, parse_get_response, parse_set, read_request, DeviceInfo, DeviceSet, SecretKey,
};
use std::mem::MaybeUninit;

/// A private key in hex and in base64 (the forms a misplaced key would arrive in).
const HEX: &str = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f";
const BASE64: &str = "3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=";

fn secret_bytes() -> [u8; 32] {
    ferrowg_proto::keys::decode_hex_key(HEX).unwrap()
}

/// Neither form of the key, nor a long piece of either.
fn assert_no_key(text: &str) {
    for form in [HEX, BASE64] {
        assert!(!text.contains(&form[..20]), "{text}");
        assert!(!text.contains(&form[24..]), "{text}");
    }
}

#[test]
fn dropping_the_model_wipes_its_private_key() {
    // The value is dropped in place inside memory this test still owns (nothing is freed),
    // and the bytes that held the key are then read back.
    let mut slot = MaybeUninit::new(DeviceSet {
        private_key: Some(SecretKey::new(secret_bytes())),
        ..DeviceSet::default()
    });
    let mut info_slot = MaybeUninit::new(DeviceInfo {
        private_key: Some(SecretKey::new(secret_bytes())),
        ..DeviceInfo::default()
    });
    // SAFETY: both slots were initialised just above and are dropped exactly once; after the
    // drop only the raw bytes of the key field are read, through raw pointers, and every bit
    // pattern is a valid `u8`. A `SecretKey` is its one `[u8; 32]` field.
    let (set_key, info_key) = unsafe {
        let set = slot.as_mut_ptr();
        let info = info_slot.as_mut_ptr();
        let set_field = std::ptr::addr_of!((*set).private_key);
        let info_field = std::ptr::addr_of!((*info).private_key);
        std::ptr::drop_in_place(set);
        std::ptr::drop_in_place(info);
        // `Option<SecretKey>` has no niche: the key's bytes are somewhere within it; read
        // them all.
        let read = |field: *const Option<SecretKey>| {
            std::ptr::read_volatile(field.cast::<[u8; std::mem::size_of::<Option<SecretKey>>()]>())
        };
        (read(set_field), read(info_field))
    };
    let key = secret_bytes();
    for bytes in [&set_key[..], &info_key[..]] {
        assert!(
            !bytes.windows(8).any(|w| key.windows(8).any(|k| k == w)),
            "key bytes survived the drop: {bytes:?}"
        );
    }
}

#[test]
fn errors_about_misplaced_or_misspelt_keys_do_not_quote_them() {
    for body in [
        format!("privatekey={HEX}\n"),
        format!("private-key={BASE64}\n"),
        format!("{BASE64}\n"),
        format!("{HEX}\n"),
        format!("public_key={HEX}\npresharedkey={HEX}\n"),
    ] {
        let e = parse_set(&format!("set=1\n{body}\n")).unwrap_err();
        assert_no_key(&e.to_string());
        assert_no_key(e.key.as_deref().unwrap_or_default());
    }
    // A known key with a short value is still quoted, as before.
    let e = parse_set("set=1\nlisten-port=5\n\n").unwrap_err();
    assert_eq!(
        (e.errno, e.key.as_deref()),
        (errno::EINVAL, Some("listen-port"))
    );
    assert!(e.message.contains("\"5\""), "{e}");

    // A key sent in place of the operation line, or after get=1.
    for stream in [format!("{BASE64}\n\n"), format!("get=1\n{HEX}\n")] {
        let e = read_request(&mut stream.as_bytes()).unwrap_err();
        assert_no_key(&e.to_string());
        assert_no_key(e.key.as_deref().unwrap_or_default());
    }
    // A get reply line without '=' (the client side).
    let e = parse_get_response(&format!("{HEX}\nerrno=0\n\n")).unwrap_err();
    assert_no_key(&e.to_string());
}

#[test]
fn invalid_secret_values_are_described_not_quoted() {
    let near_miss = &HEX[..63];
    for text in [
        format!("set=1\nprivate_key={near_miss}\n\n"),
        format!("set=1\npublic_key={HEX}\npreshared_key={near_miss}z\n\n"),
    ] {
        let e = parse_set(&text).unwrap_err();
        assert_no_key(&e.to_string());
    }
    for text in [
        format!("private_key={near_miss}\nerrno=0\n\n"),
        format!("public_key={HEX}\npreshared_key={near_miss}\nerrno=0\n\n"),
    ] {
        let e = parse_get_response(&text).unwrap_err();
        assert!(!e.message.contains(near_miss), "{e}");
    }
}
