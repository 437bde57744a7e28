//! The seam to the request, update and receipt file formats: an [`Envelope`] turns a signed request file into a
//! [`VerifiedRequest`], an [`Issued`] result into a signed update file, and a receipt file into a
//! [`VerifiedReceipt`]. [`ProvisionEnvelope`] is the real one (the CMS files of `certvault::provision`, see
//! `docs/provisioning.md`); [`NotWired`] answers every call with a clear error when no update signer is configured.

use std::path::Path;

use certvault::provision::{self, KeyOrigin as FileOrigin, ProvisionError};
use certvault::SharedKey;

use crate::error::{CentralError, Result};
use crate::processing::{Issued, KeyOrigin, ReceiptCertificate, RequestItem, VerifiedReceipt, VerifiedRequest};

/// Request/update/receipt file formats.
pub trait Envelope: Send + Sync {
    /// Checks a request file's signature (by the device key it names) and returns its content.
    fn verify_request(&self, body: &[u8]) -> Result<VerifiedRequest>;
    /// Makes the signed update file for a processed request.
    fn seal_update(&self, issued: &Issued) -> Result<Vec<u8>>;
    /// The dongle serial a receipt file names, before its signature is checked (to look up the device key).
    fn receipt_serial(&self, body: &[u8]) -> Result<String>;
    /// Checks a receipt file's signature by `device_key` (the entitled device key, DER SubjectPublicKeyInfo) and
    /// returns its content.
    fn verify_receipt(&self, body: &[u8], device_key: &[u8]) -> Result<VerifiedReceipt>;
}

/// The placeholder until the file formats are configured: every call fails with [`CentralError::Unavailable`].
#[derive(Clone, Copy, Debug, Default)]
pub struct NotWired;

fn not_wired() -> CentralError {
    CentralError::Unavailable(
        "no update signer is configured: set [update_signer] key_uri and certificate in central.toml".into(),
    )
}

impl Envelope for NotWired {
    fn verify_request(&self, _: &[u8]) -> Result<VerifiedRequest> {
        Err(not_wired())
    }
    fn seal_update(&self, _: &Issued) -> Result<Vec<u8>> {
        Err(not_wired())
    }
    fn receipt_serial(&self, _: &[u8]) -> Result<String> {
        Err(not_wired())
    }
    fn verify_receipt(&self, _: &[u8], _: &[u8]) -> Result<VerifiedReceipt> {
        Err(not_wired())
    }
}

/// A refused file: the format layer's reason, kept whole so the operator and the device can tell a tamper from a
/// replay from a mix-up.
fn refused(what: &str, e: ProvisionError) -> CentralError {
    match e {
        ProvisionError::Vault(v) => CentralError::Vault(v),
        other => CentralError::Invalid(format!("{what} refused: {other}")),
    }
}

fn nonce32(nonce: &[u8], what: &str) -> Result<[u8; 32]> {
    nonce.try_into().map_err(|_| CentralError::Invalid(format!("{what}: a nonce is 32 bytes")))
}

/// The CMS request/update/receipt files of `certvault::provision`, with updates signed inside a vault by the
/// central's update-signing key. Devices pin the leaf of `chain` (`certvault device trust-central`).
pub struct ProvisionEnvelope {
    key: SharedKey,
    chain: Vec<Vec<u8>>,
}

impl std::fmt::Debug for ProvisionEnvelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisionEnvelope")
            .field("key", &self.key.info().label)
            .field("chain", &self.chain.len())
            .finish()
    }
}

impl ProvisionEnvelope {
    /// An envelope signing updates with `key` (in a vault); `chain` is its certificate chain, leaf first, and the
    /// leaf must carry `key`'s public key.
    pub fn new(key: SharedKey, chain: Vec<Vec<u8>>) -> Result<ProvisionEnvelope> {
        let leaf = chain
            .first()
            .ok_or_else(|| CentralError::Config("the update signer's certificate file holds no certificate".into()))?;
        let spki = certvault::PublicKey::from_certificate(leaf)
            .map_err(|e| CentralError::Config(format!("the update signer's certificate: {e}")))?;
        if spki.spki_der() != key.info().spki_der.as_slice() {
            return Err(CentralError::Config(format!(
                "the update signer's certificate is not for the key {:?} (public keys differ)",
                key.info().label
            )));
        }
        Ok(ProvisionEnvelope { key, chain })
    }

    /// Opens the vault key at `key_uri` (`vaultd:` or `pkcs11:`) and reads the chain (PEM or one DER certificate)
    /// from `certificate`. Blocks (it talks to the vault).
    pub fn open(key_uri: &str, certificate: &Path) -> Result<ProvisionEnvelope> {
        let uri: certvault::uri::KeyUri =
            key_uri.parse().map_err(|e| CentralError::Config(format!("update_signer.key_uri: {e}")))?;
        let bytes = std::fs::read(certificate).map_err(|e| {
            CentralError::io(format!("reading the update signer's certificate {}", certificate.display()), e)
        })?;
        let chain =
            if bytes.starts_with(b"-----BEGIN") { crate::issuer::pem_certificates(&bytes)? } else { vec![bytes] };
        let key = certvault::store::open_key(&uri)?;
        ProvisionEnvelope::new(key, chain)
    }

    /// The certificate devices pin (the chain's leaf), DER.
    pub fn certificate(&self) -> &[u8] {
        // invariant: `new` refuses an empty chain.
        self.chain.first().map(Vec::as_slice).unwrap_or_default()
    }
}

fn map_item(item: provision::RequestItem) -> Result<RequestItem> {
    let missing = |what: &str| CentralError::Invalid(format!("request item {:?}: no {what}", item.label));
    let origin = match item.key_origin {
        FileOrigin::Device => KeyOrigin::Device { csr_der: item.csr.clone().ok_or_else(|| missing("CSR"))? },
        FileOrigin::SelfSigned => KeyOrigin::DeviceSelfSigned {
            certificate_der: item.certificate.clone().ok_or_else(|| missing("certificate"))?,
        },
        FileOrigin::Central => KeyOrigin::Central,
    };
    Ok(RequestItem {
        label: item.label,
        key_algorithm: item.algorithm,
        application_uri: item.application_uri,
        host_names: item.hosts,
        origin,
    })
}

impl Envelope for ProvisionEnvelope {
    fn verify_request(&self, body: &[u8]) -> Result<VerifiedRequest> {
        let req = provision::verify_request(body).map_err(|e| refused("request", e))?;
        let nonce = nonce32(&req.nonce, "request")?;
        let transport_oaep = req.transport_oaep;
        Ok(VerifiedRequest {
            serial: req.serial,
            device_public_key: req.device_key,
            transport_public_key: req.transport_key,
            transport_oaep,
            nonce,
            counter: req.counter,
            items: req.items.into_iter().map(map_item).collect::<Result<_>>()?,
        })
    }

    fn seal_update(&self, issued: &Issued) -> Result<Vec<u8>> {
        let items = issued
            .items
            .iter()
            .map(|i| provision::UpdateItem {
                label: i.label.clone(),
                chain: i.chain.clone(),
                sealed_key: i.sealed_key.clone(),
            })
            .collect();
        let request_counter = issued
            .new_counter
            .checked_sub(1)
            .ok_or_else(|| CentralError::Invalid("an update's counter is at least 1".into()))?;
        let update = provision::Update::new(issued.serial.clone(), issued.nonce.to_vec(), request_counter, items);
        update.sign(self.key.as_ref(), &self.chain).map_err(|e| refused("update", e))
    }

    fn receipt_serial(&self, body: &[u8]) -> Result<String> {
        #[derive(serde::Deserialize)]
        struct Peek {
            serial: String,
        }
        let opened =
            provision::envelope::open(body, provision::envelope::Kind::Receipt).map_err(|e| refused("receipt", e))?;
        let peek: Peek = serde_json::from_slice(&opened.content)
            .map_err(|e| CentralError::Invalid(format!("receipt refused: JSON: {e}")))?;
        Ok(peek.serial)
    }

    fn verify_receipt(&self, body: &[u8], device_key: &[u8]) -> Result<VerifiedReceipt> {
        let r = provision::verify_receipt(body, device_key).map_err(|e| refused("receipt", e))?;
        Ok(VerifiedReceipt {
            serial: r.serial,
            device_public_key: r.device_key,
            nonce: nonce32(&r.nonce, "receipt")?,
            counter: r.counter,
            certificates: r
                .certificates
                .into_iter()
                .map(|t| ReceiptCertificate { label: t.label, sha256: t.sha256 })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use certvault::soft::{generate_pkcs8, SoftKey};
    use certvault::{KeyAlgorithm, KeyPolicy, SharedKey};

    use super::*;

    fn key(label: &str) -> SharedKey {
        let pkcs8 = generate_pkcs8(KeyAlgorithm::EcP256).unwrap();
        Arc::new(SoftKey::from_pkcs8(pkcs8, vec![1], label.into(), true, KeyPolicy::default()).unwrap())
    }

    #[test]
    fn the_update_signer_needs_its_own_certificate() {
        let (k, other) = (key("signer"), key("other"));
        let cert = certvault::csr::self_signed_ca(other.as_ref(), "other", Duration::from_secs(3600)).unwrap();
        let err = ProvisionEnvelope::new(k.clone(), vec![cert]).unwrap_err();
        assert!(err.to_string().contains("not for the key \"signer\""), "{err}");
        assert!(ProvisionEnvelope::new(k.clone(), vec![]).unwrap_err().to_string().contains("no certificate"));
        let own = certvault::csr::self_signed_ca(k.as_ref(), "signer", Duration::from_secs(3600)).unwrap();
        assert_eq!(ProvisionEnvelope::new(k, vec![own.clone()]).unwrap().certificate(), own.as_slice());
    }

    #[test]
    fn without_an_update_signer_the_error_names_the_setting() {
        let err = NotWired.verify_request(b"x").unwrap_err();
        assert_eq!(err.http_status(), 501);
        assert!(err.to_string().contains("[update_signer]"), "{err}");
    }
}
