//! TURN credentials in coturn's `use-auth-secret` (TURN REST API) scheme:
//! username `EXPIRY:RANDOM` (unix seconds), credential
//! `base64(HMAC-SHA1(secret, username))`. flock mints them for devices
//! and browsers (it never relays media itself); tests mint their own for
//! the coturn they start.

use aws_lc_rs::hmac;

/// Standard base64 with padding (RFC 4648), as coturn expects.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `(username, credential)` valid until `expiry_unix`.
pub fn credentials(secret: &[u8], expiry_unix: u64, random: &[u8]) -> (String, String) {
    let mut username = format!("{expiry_unix}:");
    for b in random {
        username.push_str(&format!("{b:02x}"));
    }
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, username.as_bytes());
    let credential = base64(tag.as_ref());
    (username, credential)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn coturn_rest_api_credential() {
        // HMAC-SHA1 of RFC 2202 test case 2, so the credential is checkable
        // by hand: key "Jefe", data "what do ya want for nothing?".
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, b"Jefe");
        let tag = hmac::sign(&key, b"what do ya want for nothing?");
        assert_eq!(
            tag.as_ref(),
            [
                0xef, 0xfc, 0xdf, 0x6a, 0xe5, 0xeb, 0x2f, 0xa2, 0xd2, 0x74, 0x16, 0xd5, 0xf1, 0x84,
                0xdf, 0x9c, 0x25, 0x9a, 0x7c, 0x79
            ]
        );
        let (user, cred) = credentials(b"Jefe", 1_700_000_000, &[0xab, 0x01]);
        assert_eq!(user, "1700000000:ab01");
        let expected = base64(hmac::sign(&key, b"1700000000:ab01").as_ref());
        assert_eq!(cred, expected);
        assert_eq!(cred.len(), 28);
    }
}
