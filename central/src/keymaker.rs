//! Central key generation through a vault: the seam that keeps keys the central makes out of the central process.
//!
//! The production implementation is the vault daemon's (it makes the key inside, seals one copy to the dongle's
//! transport key and one to the central's backup key, and forgets it); this crate only defines the trait and holds
//! the sealed blobs, which it cannot open.

use certvault::KeyAlgorithm;

use crate::error::Result;

/// A key made inside a vault, as the central sees it: public key and two sealed copies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MadeKey {
    /// The public key (SPKI DER): the certificate is issued for it.
    pub spki: Vec<u8>,
    /// The private key sealed so that only the dongle with that transport key can unwrap it, inside.
    pub sealed_for_device: Vec<u8>,
    /// The private key sealed under the central's backup key, kept for a restore.
    pub sealed_backup: Vec<u8>,
}

/// Makes keys and re-seals backups inside a vault. Calls block (they go to a daemon or a token).
pub trait KeyMaker: Send + Sync {
    /// Makes a key of `algorithm` and seals it to `device_transport_spki` and to `backup_spki`.
    fn make_sealed(&self, algorithm: KeyAlgorithm, device_transport_spki: &[u8], backup_spki: &[u8])
        -> Result<MadeKey>;

    /// Unseals a backup inside the vault that holds the backup key and seals it to `new_transport_spki` (a
    /// replacement dongle).
    fn reseal(&self, sealed_backup: &[u8], new_transport_spki: &[u8]) -> Result<Vec<u8>>;
}
