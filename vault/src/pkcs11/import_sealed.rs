//! GDS UpdateCertificate's sealed private key on a PKCS#11 token: the key, sealed to the token's transport key
//! (`certvault:transport`), becomes a sensitive, non-extractable token key through two `C_UnwrapKey` calls, as for
//! provisioning updates ([`super::provision`]); it is never in clear outside the token.

use super::{lock, provision::unwrap_into_token, Pkcs11Token};
use crate::error::{Result, VaultError};
use crate::key::{KeyInfo, KeySelector};
use crate::provision::{seal, ProvisionError, UpdateItem, TRANSPORT_KEY_LABEL};

impl Pkcs11Token {
    /// Unwraps `sealed` into a new token key labelled `label`. The `certificate` (DER) is required here: the token
    /// key's public half is taken from it, and a sealed key that does not belong to it is refused and destroyed.
    /// A key sealed to another vault is `AccessDenied`; a damaged file is `InvalidInput`.
    pub fn import_sealed(&self, label: &str, sealed: &[u8], certificate: Option<&[u8]>) -> Result<KeyInfo> {
        let certificate = certificate.ok_or_else(|| {
            VaultError::InvalidInput("a sealed key is imported into a PKCS#11 token only with its certificate".into())
        })?;
        if label.is_empty() || crate::provision::is_reserved_label(label) {
            return Err(VaultError::InvalidInput(format!("label {label:?} is empty or reserved for the vault")));
        }
        let parts = seal::parse(sealed).map_err(refusal)?;
        let t = &self.inner;
        let _guard = lock(&t.manage);
        t.with_session(|s| {
            if t.label_exists(s, label)? {
                return Err(VaultError::DuplicateLabel(label.to_string()));
            }
            let transport = t.find_key(s, &KeySelector::Label(TRANSPORT_KEY_LABEL.into())).map_err(|_| {
                VaultError::InvalidInput(format!(
                    "token {} has no transport key: run `certvault device init` first",
                    t.label
                ))
            })?;
            let transport_info = t
                .read_key_info(s, transport)?
                .ok_or_else(|| VaultError::Pkcs11("the transport key has no readable public half".into()))?;
            seal::check_recipient(&parts, &transport_info.spki_der).map_err(refusal)?;
            let item = UpdateItem {
                label: label.to_string(),
                chain: vec![certificate.to_vec()],
                sealed_key: Some(sealed.to_vec()),
            };
            let (_private, _public, info) = unwrap_into_token(t, s, transport, &parts, &item).map_err(|e| match e {
                // The unwrap or the pair check failed: the content is not the certificate's key for this token.
                VaultError::InvalidInput(m) => VaultError::InvalidInput(format!(
                    "the sealed key does not belong to the certificate it came with, or does not unwrap: {m}"
                )),
                other => other,
            })?;
            Ok(info)
        })
        .inspect(|_| tracing::info!(label, "sealed key unwrapped into the token"))
        .inspect_err(|e| tracing::warn!(label, "sealed key refused: {e}"))
    }
}

/// The same sorting as vaultd's: another vault's key is access denied, anything unparsable invalid input.
fn refusal(e: ProvisionError) -> VaultError {
    match e {
        ProvisionError::WrongSigner { .. } => VaultError::AccessDenied(
            "the sealed key is sealed to another vault's transport key, not to this token's".into(),
        ),
        ProvisionError::Malformed { why, .. } => VaultError::InvalidInput(format!("not a sealed key: {why}")),
        ProvisionError::Vault(v) => v,
        other => VaultError::InvalidInput(other.to_string()),
    }
}
