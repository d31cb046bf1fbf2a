//! Time-based one-time passwords (RFC 6238 over RFC 4226): HMAC-SHA-1, 30-second steps,
//! 6 digits, the parameters every authenticator app uses for virtual MFA devices; and the
//! RFC 4648 base32 the seeds are shown in.

use ring::hmac;

/// Seconds per time step.
pub const STEP_SECS: u64 = 30;
/// Digits of a code.
pub const DIGITS: u32 = 6;
/// Bytes of a new device's secret (RFC 4226 recommends 160 bits).
pub const SECRET_LEN: usize = 20;

const B32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// The time step a Unix time (seconds) falls in.
pub fn step_of(unix_secs: u64) -> u64 {
    unix_secs / STEP_SECS
}

/// The HOTP value of `secret` at counter `step`, `digits` long (RFC 4226 §5.3).
pub fn code_at(secret: &[u8], step: u64, digits: u32) -> u32 {
    // SHA-1 is what RFC 6238 authenticators compute; its collision weakness does not
    // affect HMAC.
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, &step.to_be_bytes());
    let mac = tag.as_ref();
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let word = u32::from_be_bytes([mac[offset], mac[offset + 1], mac[offset + 2], mac[offset + 3]]);
    (word & 0x7fff_ffff) % 10u32.pow(digits)
}

/// The 6-digit code of `secret` at `step`, zero-padded as an app shows it.
pub fn code_text(secret: &[u8], step: u64) -> String {
    format!("{:06}", code_at(secret, step, DIGITS))
}

/// Parses a code as typed: exactly six ASCII digits.
pub fn parse_code(text: &str) -> Option<u32> {
    (text.len() == DIGITS as usize && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// The step in `steps` whose code is `code`, compared without an early exit.
pub fn matching_step(secret: &[u8], code: u32, steps: impl IntoIterator<Item = u64>) -> Option<u64> {
    let mut found = None;
    for step in steps {
        if code_at(secret, step, DIGITS) == code && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// RFC 4648 base32 without padding.
pub fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(B32[((buffer >> bits) & 31) as usize]));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(B32[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Decodes RFC 4648 base32 (padding, spaces and case ignored); None on any other character.
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| *c != b'=' && *c != b' ') {
        let v = B32.iter().position(|x| *x == c.to_ascii_uppercase())? as u32;
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
        buffer &= (1 << bits) - 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 rows (seed "12345678901234567890", 8 digits).
    const RFC6238: [(u64, u32); 6] = [
        (59, 94287082),
        (1111111109, 7081804),
        (1111111111, 14050471),
        (1234567890, 89005924),
        (2000000000, 69279037),
        (20000000000, 65353130),
    ];

    #[test]
    fn rfc6238_vectors() {
        let seed = b"12345678901234567890";
        for (time, code) in RFC6238 {
            assert_eq!(code_at(seed, step_of(time), 8), code, "T={time}");
            // Six digits are the low six of the same value.
            assert_eq!(code_at(seed, step_of(time), 6), code % 1_000_000, "T={time}");
        }
        assert_eq!(code_text(seed, step_of(1111111109)), "081804", "zero-padded");
    }

    #[test]
    fn rfc4226_hotp_vectors() {
        let seed = b"12345678901234567890";
        let expected = [755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489];
        for (counter, code) in expected.iter().enumerate() {
            assert_eq!(code_at(seed, counter as u64, 6), *code, "counter {counter}");
        }
    }

    #[test]
    fn codes_parse_strictly_and_match_their_step() {
        assert_eq!(parse_code("081804"), Some(81804));
        for bad in ["81804", "0818045", "08180a", " 081804", "+81804", ""] {
            assert_eq!(parse_code(bad), None, "{bad:?}");
        }
        let seed = b"12345678901234567890";
        let step = step_of(1111111111);
        let code = code_at(seed, step, 6);
        assert_eq!(matching_step(seed, code, step - 1..=step + 1), Some(step));
        assert_eq!(matching_step(seed, code, step + 1..=step + 3), None);
    }

    #[test]
    fn base32_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32_encode(plain.as_bytes()), encoded);
            assert_eq!(base32_decode(encoded).unwrap(), plain.as_bytes());
        }
        assert_eq!(base32_decode("mzxw 6ytb oi======").unwrap(), b"foobar");
        assert_eq!(base32_decode("MZXW1"), None, "1 is not in the alphabet");
        let secret: Vec<u8> = (0..SECRET_LEN as u8).collect();
        assert_eq!(base32_decode(&base32_encode(&secret)).unwrap(), secret);
    }
}
