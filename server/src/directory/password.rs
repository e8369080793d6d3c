//! Password hashing with argon2id (PHC strings), for the local account database and the
//! password records of `passwd-file`.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::names::Secret;

pub fn hash(password: &Secret) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// True when `password` matches `stored`; a malformed stored hash never matches.
pub fn verify(password: &Secret, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.expose().as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let h = hash(&Secret::new("Passw0rd!")).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify(&Secret::new("Passw0rd!"), &h));
        assert!(!verify(&Secret::new("passw0rd!"), &h));
        assert!(!verify(&Secret::new("x"), "not a hash"));
    }
}
