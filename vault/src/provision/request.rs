//! The request file: a device asks the central for certificates.

use serde::{Deserialize, Serialize};

use super::envelope::{self, Kind};
use super::seal::{OaepHash, Recipient};
use super::{b64, ProvisionError, Result, FORMAT_VERSION};
use crate::key::{KeyAlgorithm, VaultKey};

const WHAT: &str = "request";

/// Where the key of an item is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyOrigin {
    /// Inside the device's vault; the item carries a CSR signed there.
    Device,
    /// By the central (inside the central's vault), sealed to the device's transport key in the update.
    Central,
    /// Inside the device's vault, with a self-signed certificate made there too: the central (issuer
    /// `self-signed`) checks and records the certificate and sends it back as the item's chain.
    SelfSigned,
}

/// One certificate the device asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestItem {
    /// Label of the key in the device's vault (the update stores the chain, and a central-made key, under it).
    pub label: String,
    /// Key algorithm (`rsa2048`, `rsa3072`, `rsa4096`, `p256`, `p384`).
    pub algorithm: KeyAlgorithm,
    /// The OPC UA ApplicationUri (subjectAltName URI).
    pub application_uri: String,
    /// Host names (subjectAltName DNS names).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Where the key is made.
    pub key_origin: KeyOrigin,
    /// PKCS#10 DER made inside the vault; present exactly when `key_origin` is `device`.
    #[serde(default, with = "b64::opt", skip_serializing_if = "Option::is_none")]
    pub csr: Option<Vec<u8>>,
    /// A self-signed X.509 certificate (DER) made inside the vault for the key `label`; present exactly when
    /// `key_origin` is `self-signed`.
    #[serde(default, with = "b64::opt", skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Vec<u8>>,
}

/// A request document (the JSON inside a request file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// The dongle's serial.
    pub serial: String,
    /// The device identity key, DER SubjectPublicKeyInfo; the file is signed by it.
    #[serde(with = "b64")]
    pub device_key: Vec<u8>,
    /// The device's transport key (RSA), DER SubjectPublicKeyInfo: central-made keys are sealed to it.
    #[serde(with = "b64")]
    pub transport_key: Vec<u8>,
    /// The OAEP hash the transport key unwraps with: `sha256` (default, left out) or `sha1` for tokens whose
    /// `C_UnwrapKey` does no other (SoftHSM2 2.6).
    #[serde(default, skip_serializing_if = "OaepHash::is_default")]
    pub transport_oaep: OaepHash,
    /// A fresh random 32-byte nonce, kept by the device until the answering update is applied.
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
    /// The device's update counter now; the answering update carries `counter + 1`.
    pub counter: u64,
    /// When the request was made, seconds since the Unix epoch (information only).
    pub created: u64,
    /// What the device asks for.
    pub items: Vec<RequestItem>,
}

impl Request {
    /// Checks what the signature cannot: sizes, labels, CSR presence.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| ProvisionError::Invalid { what: WHAT, why };
        super::validate_common(WHAT, self.version, &self.nonce, self.items.iter().map(|i| i.label.as_str()))?;
        if self.serial.is_empty() {
            return Err(bad("empty serial".into()));
        }
        for item in &self.items {
            if item.application_uri.is_empty() {
                return Err(bad(format!("item {:?}: empty ApplicationUri", item.label)));
            }
            let (origin, needs_csr, needs_cert) = match item.key_origin {
                KeyOrigin::Device => ("device", true, false),
                KeyOrigin::Central => ("central", false, false),
                KeyOrigin::SelfSigned => ("self-signed", false, true),
            };
            if needs_csr != item.csr.is_some() {
                let which = if needs_csr { "needs a CSR" } else { "carries no CSR" };
                return Err(bad(format!("item {:?}: key origin {origin} {which}", item.label)));
            }
            if needs_cert != item.certificate.is_some() {
                let which = if needs_cert { "needs a certificate" } else { "carries no certificate" };
                return Err(bad(format!("item {:?}: key origin {origin} {which}", item.label)));
            }
        }
        Ok(())
    }

    /// Signs the request with the device identity key (inside its vault); the key must be `device_key`.
    pub fn sign(&self, device_key: &dyn VaultKey) -> Result<Vec<u8>> {
        self.validate()?;
        if device_key.info().spki_der != self.device_key {
            return Err(ProvisionError::Invalid {
                what: WHAT,
                why: format!("key {:?} is not the device key the request names", device_key.info().label),
            });
        }
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| ProvisionError::Invalid { what: WHAT, why: format!("encoding: {e}") })?;
        envelope::sign(Kind::Request, &json, device_key, &[])
    }

    /// Whom to seal central-made keys to: the transport key with its OAEP hash.
    pub fn transport_recipient(&self) -> Recipient {
        Recipient { spki: self.transport_key.clone(), oaep: self.transport_oaep }
    }

    /// A new request for `items` with a fresh creation time.
    pub fn new(
        serial: String,
        device_key: Vec<u8>,
        transport_key: Vec<u8>,
        nonce: Vec<u8>,
        counter: u64,
        items: Vec<RequestItem>,
    ) -> Request {
        Request {
            version: FORMAT_VERSION,
            serial,
            device_key,
            transport_key,
            transport_oaep: OaepHash::Sha256,
            nonce,
            counter,
            created: super::now_secs(),
            items,
        }
    }
}

/// Verifies a request file: structure, signature by the device key it names, and consistency. The caller (the
/// central) then checks that `device_key` is the key it entitled for `serial`, and the nonce and counter.
pub fn verify_request(der: &[u8]) -> Result<Request> {
    let opened = envelope::open(der, Kind::Request)?;
    if !opened.certificates.is_empty() {
        return Err(ProvisionError::Envelope { what: WHAT, why: "a request carries no certificates".into() });
    }
    let req: Request = serde_json::from_slice(&opened.content)
        .map_err(|e| ProvisionError::Malformed { what: WHAT, why: format!("JSON: {e}") })?;
    if !opened.signer_is_key(&req.device_key) {
        return Err(ProvisionError::WrongSigner {
            what: WHAT,
            expected: "the device key it names",
            why: "the signer identifier is another key's".into(),
        });
    }
    opened.verify(&req.device_key)?;
    req.validate()?;
    Ok(req)
}
