//! The receipt file: the device confirms an applied update.

use serde::{Deserialize, Serialize};

use super::envelope::{self, Kind};
use super::{b64, ProvisionError, Result, FORMAT_VERSION, NONCE_LEN};
use crate::key::VaultKey;

const WHAT: &str = "receipt";

/// A stored certificate, by label and SHA-256 thumbprint of its leaf.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thumbprint {
    /// Key label.
    pub label: String,
    /// SHA-256 of the leaf certificate's DER, lower-case hex.
    pub sha256: String,
}

/// A receipt document (the JSON inside a receipt file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// The dongle.
    pub serial: String,
    /// The device identity key (DER SubjectPublicKeyInfo) that signs the receipt.
    #[serde(with = "b64")]
    pub device_key: Vec<u8>,
    /// The counter after applying (the update's counter).
    pub counter: u64,
    /// The nonce of the request the update answered.
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
    /// What was stored.
    pub certificates: Vec<Thumbprint>,
}

impl Receipt {
    /// A receipt for an applied update.
    pub fn new(
        serial: String,
        device_key: Vec<u8>,
        counter: u64,
        nonce: Vec<u8>,
        certificates: Vec<Thumbprint>,
    ) -> Self {
        Receipt { version: FORMAT_VERSION, serial, device_key, counter, nonce, certificates }
    }

    /// Signs the receipt with the device identity key (inside its vault).
    pub fn sign(&self, device_key: &dyn VaultKey) -> Result<Vec<u8>> {
        if device_key.info().spki_der != self.device_key {
            return Err(ProvisionError::Invalid { what: WHAT, why: "signed by another key than it names".into() });
        }
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| ProvisionError::Invalid { what: WHAT, why: format!("encoding: {e}") })?;
        envelope::sign(Kind::Receipt, &json, device_key, &[])
    }
}

/// Verifies a receipt file against the device key the central entitled (DER SubjectPublicKeyInfo). The central
/// then matches serial, nonce, counter and thumbprints with the update it sent.
pub fn verify_receipt(der: &[u8], device_key: &[u8]) -> Result<Receipt> {
    let opened = envelope::open(der, Kind::Receipt)?;
    if !opened.certificates.is_empty() {
        return Err(ProvisionError::Envelope { what: WHAT, why: "a receipt carries no certificates".into() });
    }
    if !opened.signer_is_key(device_key) {
        return Err(ProvisionError::WrongSigner {
            what: WHAT,
            expected: "the device key",
            why: "the signer identifier is another key's".into(),
        });
    }
    opened.verify(device_key)?;
    let r: Receipt = serde_json::from_slice(&opened.content)
        .map_err(|e| ProvisionError::Malformed { what: WHAT, why: format!("JSON: {e}") })?;
    if r.version != FORMAT_VERSION {
        return Err(ProvisionError::Version { what: WHAT, found: r.version });
    }
    if r.device_key != device_key {
        return Err(ProvisionError::WrongSigner {
            what: WHAT,
            expected: "the device key",
            why: "the receipt names another device key".into(),
        });
    }
    if r.nonce.len() != NONCE_LEN {
        return Err(ProvisionError::Invalid { what: WHAT, why: "bad nonce length".into() });
    }
    Ok(r)
}
