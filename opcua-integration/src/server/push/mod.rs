//! GDS push (OPC 10000-12 §7.7): the ServerConfiguration object of namespace 0 with working methods, so a
//! certificate manager can renew this server's certificate and trust list while it runs.
//!
//! - CreateSigningRequest: a PKCS#10 request signed inside the vault; with regeneratePrivateKey a new key is made
//!   inside the same vault (vaultd container or PKCS#11 token) under a new label. The current key keeps serving.
//! - UpdateCertificate: a certificate (and issuers) for the pending or the current key, checked like the
//!   certificate at start-up, stored beside the key in the vault. A private key is accepted only sealed for the
//!   vault ([`SEALED_KEY_FORMAT`], through a [`SealedKeyImporter`]); "PEM" and "PFX" are always refused, because a
//!   private key never passes through this process.
//! - ApplyChanges: new channels and sessions use the new certificate and key; open ones keep theirs.
//! - GetRejectedList and the DefaultApplicationGroup TrustList ([`trust_list`]).
//!
//! Every method needs a SignAndEncrypt channel (else BadSecurityModeInsufficient) and an administrator session
//! (else BadUserAccessDenied; the methods' UserExecutable attribute is false for everyone else).

mod server_configuration;
pub mod trust_list;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use certvault::{KeyInfo, KeyStore, VaultError};
use opcua_types::StatusCode;

use super::access::UserRole;
use super::address_space::MethodCall;
use crate::channel::policy::SecurityMode;

pub(crate) use server_configuration::{install, PushContext};

/// The only private key format UpdateCertificate accepts: a key sealed to the vault's transport key (CMS
/// EnvelopedData, see the vault's provisioning documentation), unwrapped inside the vault.
pub const SEALED_KEY_FORMAT: &str = "CertVaultSealed";

/// Default MaxTrustListSize: the largest trust list file a client may write, in bytes.
pub const DEFAULT_MAX_TRUST_LIST_SIZE: u32 = 1024 * 1024;

/// Imports a private key sealed for this server's vault (format [`SEALED_KEY_FORMAT`]). The unwrap happens inside
/// the vault: this process only ever holds the ciphertext and the new key's public facts.
///
/// Implemented by the vault's provisioning code; until a server is given one, sealed keys are refused with
/// BadNotSupported.
pub trait SealedKeyImporter: Send + Sync + fmt::Debug {
    /// Unwraps `sealed` inside the vault into a new key labelled `label` and returns its public facts. The vault
    /// refuses (and does not store) a key that does not belong to `certificate` (DER). A key sealed to another
    /// vault is [`VaultError::AccessDenied`]; a damaged file [`VaultError::InvalidInput`] or
    /// [`VaultError::DecryptFailed`].
    fn import_sealed(&self, sealed: &[u8], label: &str, certificate: &[u8]) -> Result<KeyInfo, VaultError>;
}

/// vaultd: the key is opened inside the daemon with the container's transport key (`import-sealed` operation).
impl SealedKeyImporter for certvault::DaemonClient {
    fn import_sealed(&self, sealed: &[u8], label: &str, certificate: &[u8]) -> Result<KeyInfo, VaultError> {
        certvault::DaemonClient::import_sealed(self, label, sealed, Some(certificate))
    }
}

/// PKCS#11: the key is unwrapped into the token with `C_UnwrapKey` under the token's transport key.
impl SealedKeyImporter for certvault::pkcs11::Pkcs11Token {
    fn import_sealed(&self, sealed: &[u8], label: &str, certificate: &[u8]) -> Result<KeyInfo, VaultError> {
        certvault::pkcs11::Pkcs11Token::import_sealed(self, label, sealed, Some(certificate))
    }
}

/// The status code UpdateCertificate answers when the vault refuses a sealed key.
pub(crate) fn sealed_key_status(e: &VaultError) -> StatusCode {
    match e {
        // Sealed to another vault, or unwrapped to garbage: the key is not for us.
        VaultError::AccessDenied(_) | VaultError::DecryptFailed => StatusCode::BadSecurityChecksFailed,
        VaultError::InvalidInput(m) if m.contains("does not belong to the certificate") => {
            StatusCode::BadSecurityChecksFailed
        }
        VaultError::InvalidInput(_) => StatusCode::BadInvalidArgument,
        VaultError::DuplicateLabel(_) => StatusCode::BadInvalidState,
        _ => StatusCode::BadInternalError,
    }
}

/// What GDS push needs beyond the server's configuration: where the key lives, so new keys and CSRs are made there.
#[derive(Clone)]
pub struct PushConfig {
    /// The vault (vaultd container or PKCS#11 token) that holds the server's key; new keys are made in it.
    pub key_store: Arc<dyn KeyStore>,
    /// Largest trust list a client may write (MaxTrustListSize), in bytes.
    pub max_trust_list_size: u32,
    /// Unwraps sealed private keys inside the vault; `None` refuses them (BadNotSupported).
    pub sealed_key_importer: Option<Arc<dyn SealedKeyImporter>>,
    /// A file that receives the new certificate chain (DER, leaf first) at UpdateCertificate, for configurations
    /// that read the certificate from a file rather than from the vault.
    pub certificate_file: Option<PathBuf>,
}

impl PushConfig {
    /// Push with keys made in `key_store`, the default MaxTrustListSize, no sealed key import and no certificate
    /// file.
    pub fn new(key_store: Arc<dyn KeyStore>) -> Self {
        PushConfig {
            key_store,
            max_trust_list_size: DEFAULT_MAX_TRUST_LIST_SIZE,
            sealed_key_importer: None,
            certificate_file: None,
        }
    }
}

impl fmt::Debug for PushConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushConfig")
            .field("max_trust_list_size", &self.max_trust_list_size)
            .field("sealed_key_importer", &self.sealed_key_importer)
            .field("certificate_file", &self.certificate_file)
            .finish_non_exhaustive()
    }
}

/// The checks every push method makes first: the channel encrypts, the caller administers. The address space
/// refuses non-administrators already; checking again here keeps the rule in one readable place.
pub(crate) fn authorize(call: &MethodCall) -> Result<(), StatusCode> {
    if call.security_mode != SecurityMode::SignAndEncrypt {
        tracing::warn!(method = %call.method_id, user = %call.principal.name, "push method refused: channel not SignAndEncrypt");
        return Err(StatusCode::BadSecurityModeInsufficient);
    }
    if !call.principal.role.allows(UserRole::Administrator) {
        tracing::warn!(method = %call.method_id, user = %call.principal.name, "push method refused: not an administrator");
        return Err(StatusCode::BadUserAccessDenied);
    }
    Ok(())
}
