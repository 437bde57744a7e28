//! What client and server share about sessions (Part 4 §5.6): the proofs of key possession both sides sign
//! ([`signature`]) and the encrypted user secret format ([`secret`]).
//!
//! Every signature here is made by a [`certvault::VaultKey`], and every decryption of a user secret runs in the vault,
//! one RSA block per call; only the public halves are handled in this process.

pub mod secret;
pub mod signature;

pub use secret::{decrypt_secret, encrypt_secret, EncryptedSecret};
pub use signature::{sign, verify};

/// Length of the session nonces we generate (Part 4 §5.6.2: at least 32 bytes).
pub const NONCE_LEN: usize = 32;

/// A fresh random nonce of [`NONCE_LEN`] bytes.
pub fn new_nonce() -> crate::Result<[u8; NONCE_LEN]> {
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| crate::Error::Crypto("no randomness for a session nonce"))?;
    Ok(nonce)
}
