//! TOTP second factor (RFC 6238: HMAC-SHA-1, 6 digits, 30-second steps, one step of skew)
//! and recovery codes.

use totp_rs::{Builder, Secret, Totp};

use super::secret::{fill_random, sha256_hex};

/// The issuer shown in authenticator apps.
pub const ISSUER: &str = "FlowLink";
/// How many recovery codes a user gets.
pub const RECOVERY_CODES: usize = 10;

/// A new random 160-bit secret, base32.
pub fn new_secret() -> String {
    Secret::generate().to_base32()
}

fn totp(secret_b32: &str, account: &str) -> Result<Totp, String> {
    let secret = Secret::try_from_base32(secret_b32)
        .map_err(|e| format!("stored TOTP secret is not base32: {e:?}"))?;
    Builder::new()
        .with_secret(secret)
        .with_issuer(Some(ISSUER))
        .with_account_name(account.replace(':', "_"))
        .build()
        .map_err(|e| format!("invalid TOTP parameters: {e:?}"))
}

/// The `otpauth://` URI an authenticator app scans, and the same as a PNG QR code (base64).
pub fn provisioning(secret_b32: &str, account: &str) -> Result<(String, String), String> {
    let t = totp(secret_b32, account)?;
    let uri = t
        .to_url()
        .map_err(|e| format!("cannot build the otpauth URI: {e:?}"))?;
    let qr = t
        .to_qr_base64()
        .map_err(|e| format!("cannot draw the QR code: {e:?}"))?;
    Ok((uri, qr))
}

/// The time step (`unix_secs / 30`) whose code `code` is, within one step of `unix_secs`, or
/// `None`. The caller must refuse a step it has already accepted (RFC 6238 §5.2).
pub fn check(secret_b32: &str, code: &str, unix_secs: u64) -> Option<u64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let t = totp(secret_b32, "x").ok()?;
    // totp-rs returns the matching counter (time step), not a time.
    t.check(&code, unix_secs)
}

/// The code for `unix_secs` (tests and the CLI's self-check).
pub fn code_at(secret_b32: &str, unix_secs: u64) -> Result<String, String> {
    Ok(totp(secret_b32, "x")?.generate(unix_secs).to_string())
}

/// New recovery codes (shown once) and their stored hashes. Each code is 10 random bytes as
/// `xxxx-xxxx-xxxx-xxxx` from an alphabet without look-alike characters.
pub fn recovery_codes() -> (Vec<String>, Vec<String>) {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789"; // 31, no 0 o 1 i l
    let mut codes = Vec::with_capacity(RECOVERY_CODES);
    for _ in 0..RECOVERY_CODES {
        let mut raw = [0u8; 16];
        fill_random(&mut raw);
        let chars: String = raw
            .iter()
            .map(|b| ALPHABET[usize::from(b % 31)] as char)
            .collect();
        codes.push(format!(
            "{}-{}-{}-{}",
            &chars[0..4],
            &chars[4..8],
            &chars[8..12],
            &chars[12..16]
        ));
    }
    let hashes = codes.iter().map(|c| hash_recovery_code(c)).collect();
    (codes, hashes)
}

/// The stored form of a recovery code as a person may type it (case, spaces and dashes ignored).
pub fn hash_recovery_code(code: &str) -> String {
    let normal: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    sha256_hex(&format!("flowlink-recovery:{normal}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vectors() {
        // RFC 6238 Appendix B, SHA-1 secret "12345678901234567890", truncated to 6 digits.
        let secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
        for (t, code) in [
            (59u64, "287082"),
            (1111111109, "081804"),
            (1234567890, "005924"),
            (2000000000, "279037"),
        ] {
            assert_eq!(code_at(secret, t).unwrap(), code);
            assert_eq!(check(secret, code, t), Some(t / 30));
        }
    }

    #[test]
    fn skew_is_one_step_and_garbage_is_refused() {
        let s = new_secret();
        let now = 1_800_000_000;
        let code = code_at(&s, now).unwrap();
        assert_eq!(check(&s, &code, now + 30), Some(now / 30));
        assert_eq!(check(&s, &code, now + 61), None);
        assert_eq!(check(&s, "12345", now), None);
        assert_eq!(check(&s, "abcdef", now), None);
    }

    #[test]
    fn recovery_codes_are_distinct_and_forgiving() {
        let (codes, hashes) = recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        assert_eq!(
            hash_recovery_code(&codes[0].to_uppercase().replace('-', " ")),
            hashes[0]
        );
        let mut unique = hashes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), RECOVERY_CODES);
    }

    #[test]
    fn provisioning_uri_names_issuer_and_account() {
        let (uri, qr) = provisioning(&new_secret(), "ann@example.com").unwrap();
        assert!(
            uri.starts_with("otpauth://totp/FlowLink:ann%40example.com?")
                || uri.starts_with("otpauth://totp/FlowLink:ann@example.com?"),
            "{uri}"
        );
        assert!(uri.contains("issuer=FlowLink"));
        assert!(!qr.is_empty());
    }
}
