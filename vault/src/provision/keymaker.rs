//! Keys the central makes without ever holding them: the key is generated inside a vault (vaultd), sealed there
//! to each recipient, and forgotten.

use serde::{Deserialize, Serialize};

use super::seal::Recipient;
use crate::error::Result;
use crate::key::{KeyAlgorithm, KeySelector};

/// A key made and sealed inside a vault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedKeys {
    /// The new key's public half, DER SubjectPublicKeyInfo (for the certificate).
    #[serde(with = "serde_bytes")]
    pub spki: Vec<u8>,
    /// One sealed copy ([`super::seal`]) per recipient, in the order the recipients were given.
    pub sealed: Vec<serde_bytes::ByteBuf>,
}

/// What the central calls to make keys for devices. The vaultd implementation is [`crate::DaemonClient`].
pub trait KeyMaker: Send + Sync {
    /// Makes a key of `algorithm` inside the vault and returns its public key and one sealed copy per recipient
    /// (the device's transport key: [`super::Request::transport_recipient`]; the central's backup key). The vault
    /// keeps nothing.
    fn generate_sealed_to(&self, algorithm: KeyAlgorithm, recipients: &[Recipient]) -> Result<SealedKeys>;

    /// Opens `sealed` with the unwrap-only vault key `backup_key` inside the vault and seals it again to
    /// `recipient`: the restore of a backed-up key to a replacement dongle.
    fn reseal_to(&self, backup_key: &KeySelector, sealed: &[u8], recipient: &Recipient) -> Result<Vec<u8>>;

    /// [`KeyMaker::generate_sealed_to`] for recipients given as DER SubjectPublicKeyInfo, with OAEP-SHA-256.
    fn generate_sealed(&self, algorithm: KeyAlgorithm, recipients: &[Vec<u8>]) -> Result<SealedKeys> {
        let r: Vec<Recipient> = recipients.iter().cloned().map(Recipient::new).collect();
        self.generate_sealed_to(algorithm, &r)
    }

    /// [`KeyMaker::reseal_to`] for a recipient given as DER SubjectPublicKeyInfo, with OAEP-SHA-256.
    fn reseal(&self, backup_key: &KeySelector, sealed: &[u8], recipient: &[u8]) -> Result<Vec<u8>> {
        self.reseal_to(backup_key, sealed, &Recipient::new(recipient.to_vec()))
    }
}
