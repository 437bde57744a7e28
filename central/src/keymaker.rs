//! Central key generation through a vault: the seam that keeps keys the central makes out of the central process.
//!
//! The production implementation is the vault daemon's (it makes the key inside, seals one copy to the dongle's
//! transport key and one to the central's backup key, and forgets it); this crate only defines the trait and holds
//! the sealed blobs, which it cannot open.

use certvault::provision::Recipient;
use certvault::KeyAlgorithm;

use crate::error::{CentralError, Result};

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
    /// Makes a key of `algorithm` and seals it to the dongle's transport key (`device`, with the OAEP hash its
    /// request names) and to the central's backup key (`backup`).
    fn make_sealed(&self, algorithm: KeyAlgorithm, device: &Recipient, backup: &Recipient) -> Result<MadeKey>;

    /// Unseals a backup inside the vault that holds the backup key and seals it to `new_transport` (a
    /// replacement dongle's transport key).
    fn reseal(&self, sealed_backup: &[u8], new_transport: &Recipient) -> Result<Vec<u8>>;
}

/// The production [`KeyMaker`]: the central's own vaultd. Keys are made inside the daemon and leave it only sealed
/// (to the dongle's transport key and to the backup key); the backup key is unwrap-only, made inside that vault,
/// and opens backups only inside it for a re-seal.
pub struct VaultdKeyMaker {
    client: certvault::DaemonClient,
    backup_label: String,
    backup_spki: Vec<u8>,
}

impl std::fmt::Debug for VaultdKeyMaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultdKeyMaker").field("backup_label", &self.backup_label).finish_non_exhaustive()
    }
}

/// The backup key's algorithm when the central makes it: RSA, since sealed keys use RSA-OAEP key transport.
const BACKUP_KEY_ALG: KeyAlgorithm = KeyAlgorithm::Rsa { bits: 3072 };

impl VaultdKeyMaker {
    /// Uses the logged-in `client`, with the backup key labelled `backup_label`: made inside (RSA-3072,
    /// unwrap-only) when missing; refused when it exists without the unwrap-only policy. Blocks.
    pub fn new(client: certvault::DaemonClient, backup_label: &str) -> Result<VaultdKeyMaker> {
        use certvault::KeyStore as _;
        if backup_label.is_empty() || certvault::provision::is_reserved_label(backup_label) {
            return Err(CentralError::Config(format!(
                "key_maker.backup_key {backup_label:?}: empty, or a reserved certvault: label"
            )));
        }
        let selector = certvault::KeySelector::Label(backup_label.to_owned());
        let info = match client.key(&selector) {
            Ok(k) => k.info().clone(),
            Err(certvault::VaultError::KeyNotFound(_)) => {
                let policy = certvault::KeyPolicy { unwrap_only: true, ..certvault::KeyPolicy::default() };
                let info = client.generate(backup_label, BACKUP_KEY_ALG, policy)?;
                tracing::info!(label = backup_label, "made the backup key inside the central's vault");
                info
            }
            Err(e) => return Err(e.into()),
        };
        if !info.policy.unwrap_only {
            return Err(CentralError::Config(format!(
                "key_maker.backup_key {backup_label:?} exists but is not unwrap-only; use another label"
            )));
        }
        if !info.algorithm.is_rsa() {
            return Err(CentralError::Config(format!(
                "key_maker.backup_key {backup_label:?} is {}: sealed keys need an RSA key",
                info.algorithm
            )));
        }
        Ok(VaultdKeyMaker { client, backup_label: backup_label.to_owned(), backup_spki: info.spki_der })
    }

    /// Connects to the vaultd at `socket` (container `container` when it serves several), logs in with `pin` and
    /// calls [`VaultdKeyMaker::new`]. Blocks.
    pub fn connect(
        socket: &std::path::Path,
        container: Option<String>,
        pin: &[u8],
        backup_label: &str,
    ) -> Result<VaultdKeyMaker> {
        let client = certvault::DaemonClient::connect(socket, container)?;
        client.login(pin)?;
        VaultdKeyMaker::new(client, backup_label)
    }

    /// The backup key's public half (DER SubjectPublicKeyInfo).
    pub fn backup_spki(&self) -> &[u8] {
        &self.backup_spki
    }
}

impl KeyMaker for VaultdKeyMaker {
    fn make_sealed(&self, algorithm: KeyAlgorithm, device: &Recipient, backup: &Recipient) -> Result<MadeKey> {
        use certvault::provision::KeyMaker as _;
        let made = self.client.generate_sealed_to(algorithm, &[device.clone(), backup.clone()])?;
        let sealed: Vec<Vec<u8>> = made.sealed.into_iter().map(|b| b.into_vec()).collect();
        match <[Vec<u8>; 2]>::try_from(sealed) {
            Ok([sealed_for_device, sealed_backup]) => Ok(MadeKey { spki: made.spki, sealed_for_device, sealed_backup }),
            Err(v) => Err(CentralError::KeyMaker(format!("vaultd returned {} sealed copies, not 2", v.len()))),
        }
    }

    fn reseal(&self, sealed_backup: &[u8], new_transport: &Recipient) -> Result<Vec<u8>> {
        use certvault::provision::KeyMaker as _;
        let selector = certvault::KeySelector::Label(self.backup_label.clone());
        Ok(self.client.reseal_to(&selector, sealed_backup, new_transport)?)
    }
}
