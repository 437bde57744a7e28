//! Keys the central makes without ever holding them: the key is generated inside a vault (vaultd), sealed there
//! to each recipient, and forgotten.

use serde::{Deserialize, Serialize};

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
    /// (DER SubjectPublicKeyInfo of RSA keys: the device's transport key, the central's backup key). The vault
    /// keeps nothing.
    fn generate_sealed(&self, algorithm: KeyAlgorithm, recipients: &[Vec<u8>]) -> Result<SealedKeys>;

    /// Opens `sealed` with the vault key `backup_key` inside the vault and seals it again to `recipient` (DER
    /// SubjectPublicKeyInfo): the restore of a backed-up key to a replacement dongle.
    fn reseal(&self, backup_key: &KeySelector, sealed: &[u8], recipient: &[u8]) -> Result<Vec<u8>>;
}
