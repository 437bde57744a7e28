//! The `import-sealed` operation: a private key sealed to the container's transport key is opened here, inside
//! the daemon, and stored as a new non-exportable key. Used by an OPC UA server's GDS UpdateCertificate with a
//! "CertVaultSealed" private key, so the key never passes through the server process in clear.

use tracing::{info, warn};

use super::{lock_err, Backend, Conn, NewKey, Slot};
use crate::error::{Result, VaultError};
use crate::key::{KeyInfo, KeyPolicy, VaultKey};
use crate::provision::{seal, ProvisionError, TRANSPORT_KEY_LABEL};
use crate::soft::SoftKey;

/// Sorts a refusal of a sealed key into the error classes the wire carries, so a caller can tell a key sealed for
/// another vault (access denied) from a damaged file (invalid input) from a failed unwrap (decrypt failed).
pub(crate) fn sealed_error(e: ProvisionError) -> VaultError {
    match e {
        ProvisionError::WrongSigner { .. } => VaultError::AccessDenied(
            "the sealed key is sealed to another vault's transport key, not to this one's".into(),
        ),
        ProvisionError::Malformed { why, .. } => VaultError::InvalidInput(format!("not a sealed key: {why}")),
        ProvisionError::Vault(v) => v,
        other => VaultError::InvalidInput(other.to_string()),
    }
}

/// Checks that the opened key is the key of `certificate` (when one is given).
fn check_certificate(info: &KeyInfo, certificate: Option<&[u8]>) -> Result<()> {
    let Some(cert) = certificate else { return Ok(()) };
    crate::store::check_leaf_matches(info, &[cert.to_vec()]).map_err(|e| {
        VaultError::InvalidInput(format!("the sealed key does not belong to the certificate it came with: {e}"))
    })
}

impl Slot {
    /// Opens `sealed` with this slot's transport key and stores the key under `label`.
    pub(super) fn import_sealed(
        &self,
        conn: &Conn,
        label: &str,
        sealed: &[u8],
        certificate: Option<&[u8]>,
    ) -> Result<KeyInfo> {
        self.require_login(conn)?;
        if let Backend::Token { token, .. } = &self.backend {
            let result = token.import_sealed(label, sealed, certificate);
            let detail = result.as_ref().err().map(|e| e.to_string());
            self.audit(conn, "import-sealed", Some(label), detail, result.is_ok())?;
            return result;
        }
        let opened = (|| -> Result<zeroize::Zeroizing<Vec<u8>>> {
            let transport = {
                let guard = self.container()?.read().map_err(lock_err)?;
                let open = guard.as_ref().ok_or(VaultError::NotLoggedIn)?;
                open.keys.iter().find(|k| k.info().label == TRANSPORT_KEY_LABEL).cloned().ok_or_else(|| {
                    VaultError::InvalidInput(format!(
                        "container {} has no transport key: run `certvault device init` first",
                        self.serial
                    ))
                })?
            };
            let pkcs8 = seal::open(sealed, transport.as_ref()).map_err(sealed_error)?;
            // Parse once before storing, to check the key against the certificate without touching the container.
            let probe = SoftKey::from_pkcs8(pkcs8.clone(), Vec::new(), label.to_string(), false, KeyPolicy::default())
                .map_err(|e| {
                    VaultError::InvalidInput(format!("the sealed content is not a usable private key: {e}"))
                })?;
            check_certificate(probe.info(), certificate)?;
            Ok(pkcs8)
        })();
        let pkcs8 = match opened {
            Ok(p) => p,
            Err(e) => {
                warn!(serial = %self.serial, label, "import-sealed refused: {e}");
                self.audit(conn, "import-sealed", Some(label), Some(e.to_string()), false)?;
                return Err(e);
            }
        };
        let result = self.add_key(conn, label, NewKey::Import(pkcs8), KeyPolicy::default());
        self.audit(conn, "import-sealed", Some(label), None, result.is_ok())?;
        if result.is_ok() {
            info!(serial = %self.serial, label, "sealed key imported");
        }
        result
    }
}
