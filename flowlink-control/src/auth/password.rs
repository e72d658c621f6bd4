//! Passwords: argon2id hashes (PHC strings), length limits and verification that takes the
//! same time whether or not the account exists.

use std::sync::OnceLock;

use argon2::password_hash::phc::PasswordHash;
use argon2::{Argon2, PasswordHasher, PasswordVerifier};

/// Fewest characters accepted.
pub const MIN_CHARS: usize = 12;
/// Most bytes accepted: longer input is refused before hashing so nobody can make the server
/// hash megabytes.
pub const MAX_BYTES: usize = 1024;

/// Why a new password was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordPolicyError {
    /// Fewer than [`MIN_CHARS`] characters.
    #[error(
        "the password is too short: use at least {MIN_CHARS} characters (a passphrase of several words works well)"
    )]
    TooShort,
    /// More than [`MAX_BYTES`] bytes.
    #[error("the password is too long: at most {MAX_BYTES} bytes")]
    TooLong,
    /// One character repeated, or the e-mail address itself.
    #[error("the password is too easy to guess: {0}")]
    Guessable(&'static str),
}

/// Checks a new password against the length limits and the most obvious guesses.
pub fn check_new(password: &str, email: &str) -> Result<(), PasswordPolicyError> {
    if password.len() > MAX_BYTES {
        return Err(PasswordPolicyError::TooLong);
    }
    if password.chars().count() < MIN_CHARS {
        return Err(PasswordPolicyError::TooShort);
    }
    let mut chars = password.chars();
    let first = chars.next();
    if chars.all(|c| Some(c) == first) {
        return Err(PasswordPolicyError::Guessable(
            "it is one character repeated",
        ));
    }
    let lower = password.to_lowercase();
    let email = email.trim().to_lowercase();
    let local = email.split('@').next().unwrap_or("");
    if lower == email
        || (!local.is_empty() && lower.contains(local) && local.len() * 2 >= lower.len())
    {
        return Err(PasswordPolicyError::Guessable(
            "it is mostly the e-mail address",
        ));
    }
    const COMMON: &[&str] = &[
        "password", "passw0rd", "123456", "qwerty", "letmein", "welcome", "iloveyou", "admin",
        "flowlink", "abc123", "111111", "monkey", "dragon",
    ];
    let stripped: String = lower
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    if COMMON
        .iter()
        .any(|w| stripped.starts_with(w) && stripped.len() <= w.len() + 4)
    {
        return Err(PasswordPolicyError::Guessable(
            "it is a common password with a few characters added",
        ));
    }
    Ok(())
}

fn hasher() -> Argon2<'static> {
    // argon2id, the crate's defaults (19 MiB, 2 passes, 1 lane): OWASP's recommended minimum.
    Argon2::default()
}

/// Hashes a password (argon2id, random salt) into a PHC string.
pub fn hash(password: &str) -> Result<String, String> {
    hasher()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Whether `password` matches the stored PHC string. A malformed hash never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    if password.len() > MAX_BYTES {
        return false;
    }
    match PasswordHash::new(phc) {
        Ok(parsed) => hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Spends the time of one verification against a fixed hash, for accounts that do not exist
/// or have no password, so that response time does not reveal which e-mail addresses exist.
pub fn verify_dummy(password: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let phc = DUMMY.get_or_init(|| hash("flowlink dummy password for timing").unwrap_or_default());
    let _ = verify(password, phc);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ() {
        let a = hash("correct horse battery").unwrap();
        let b = hash("correct horse battery").unwrap();
        assert_ne!(a, b, "salted");
        assert!(a.starts_with("$argon2id$"));
        assert!(verify("correct horse battery", &a));
        assert!(!verify("correct horse batterY", &a));
        assert!(!verify("x", "not a hash"));
    }

    #[test]
    fn new_passwords_are_checked() {
        assert_eq!(
            check_new("short", "a@b.c"),
            Err(PasswordPolicyError::TooShort)
        );
        assert_eq!(
            check_new(&"x".repeat(2000), "a@b.c"),
            Err(PasswordPolicyError::TooLong)
        );
        assert!(matches!(
            check_new("aaaaaaaaaaaaaaa", "a@b.c"),
            Err(PasswordPolicyError::Guessable(_))
        ));
        assert!(matches!(
            check_new("Password123!", "a@b.c"),
            Err(PasswordPolicyError::Guessable(_))
        ));
        assert!(matches!(
            check_new("alice.smith@example.com", "alice.smith@example.com"),
            Err(PasswordPolicyError::Guessable(_))
        ));
        assert_eq!(check_new("tulip orbit canvas 42", "a@b.c"), Ok(()));
    }
}
