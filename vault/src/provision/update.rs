//! The update file: the central's answer to a request.

use serde::{Deserialize, Serialize};

use super::envelope::{self, Kind};
use super::{b64, ProvisionError, Result, FORMAT_VERSION};
use crate::key::VaultKey;

const WHAT: &str = "update";

/// One issued certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateItem {
    /// Label of the key in the device's vault.
    pub label: String,
    /// DER certificates, leaf first.
    #[serde(with = "b64::list")]
    pub chain: Vec<Vec<u8>>,
    /// For a central-made key: the private key sealed to the device's transport key ([`super::seal`]).
    #[serde(default, with = "b64::opt", skip_serializing_if = "Option::is_none")]
    pub sealed_key: Option<Vec<u8>>,
}

/// An update document (the JSON inside an update file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// The dongle it is for.
    pub serial: String,
    /// The nonce of the request it answers.
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
    /// The device's counter after applying: the request's counter + 1.
    pub counter: u64,
    /// SHA-256 thumbprints (hex) of the certificates the envelope carries, so that they are covered by the
    /// signature too.
    pub signer_chain: Vec<String>,
    /// What to store.
    pub items: Vec<UpdateItem>,
}

/// What the device expects of the next update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected<'a> {
    /// This dongle's serial.
    pub serial: &'a str,
    /// The nonce of the outstanding request.
    pub nonce: &'a [u8],
    /// The stored counter + 1.
    pub counter: u64,
}

impl Update {
    /// A new update answering a request with `nonce` and `request_counter`.
    pub fn new(serial: String, nonce: Vec<u8>, request_counter: u64, items: Vec<UpdateItem>) -> Update {
        Update {
            version: FORMAT_VERSION,
            serial,
            nonce,
            counter: request_counter.saturating_add(1),
            signer_chain: Vec::new(),
            items,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |why: String| ProvisionError::Invalid { what: WHAT, why };
        super::validate_common(WHAT, self.version, &self.nonce, self.items.iter().map(|i| i.label.as_str()))?;
        for item in &self.items {
            if item.chain.is_empty() {
                return Err(bad(format!("item {:?}: empty certificate chain", item.label)));
            }
        }
        Ok(())
    }

    /// Signs the update with the central's key (inside its vault). `central_chain` (leaf first) travels in the
    /// envelope; its leaf must carry `central_key`'s public key, and is what devices pin.
    pub fn sign(&self, central_key: &dyn VaultKey, central_chain: &[Vec<u8>]) -> Result<Vec<u8>> {
        if central_chain.is_empty() {
            return Err(ProvisionError::Invalid { what: WHAT, why: "the central's certificate is missing".into() });
        }
        let mut doc = self.clone();
        doc.signer_chain = central_chain.iter().map(|c| super::thumbprint(c)).collect();
        doc.validate()?;
        let json = serde_json::to_vec_pretty(&doc)
            .map_err(|e| ProvisionError::Invalid { what: WHAT, why: format!("encoding: {e}") })?;
        envelope::sign(Kind::Update, &json, central_key, central_chain)
    }
}

/// Verifies an update file against the pinned central certificate and what the device expects: signature by the
/// pinned certificate's key, then serial, nonce and counter, in that order.
pub fn verify_update(der: &[u8], trusted_central_cert: &[u8], expected: &Expected<'_>) -> Result<Update> {
    let opened = envelope::open(der, Kind::Update)?;
    let wrong =
        |why: &str| ProvisionError::WrongSigner { what: WHAT, expected: "the trusted central", why: why.to_string() };
    if !opened.certificates.iter().any(|c| c == trusted_central_cert) {
        return Err(wrong("the envelope does not carry the pinned central certificate"));
    }
    if !opened.signer_is_cert(trusted_central_cert) {
        return Err(wrong("the signer is not the pinned central certificate"));
    }
    let spki = crate::PublicKey::from_certificate(trusted_central_cert)?.spki_der().to_vec();
    opened.verify(&spki)?;
    let update: Update = serde_json::from_slice(&opened.content)
        .map_err(|e| ProvisionError::Malformed { what: WHAT, why: format!("JSON: {e}") })?;
    let mut carried: Vec<String> = opened.certificates.iter().map(|c| super::thumbprint(c)).collect();
    let mut listed = update.signer_chain.clone();
    carried.sort();
    listed.sort();
    if carried != listed {
        return Err(ProvisionError::Envelope {
            what: WHAT,
            why: "the certificates carried differ from the signed list".into(),
        });
    }
    update.validate()?;
    if update.serial != expected.serial {
        return Err(ProvisionError::WrongSerial {
            what: WHAT,
            expected: expected.serial.to_string(),
            found: update.serial,
        });
    }
    if !bool::from(subtle::ConstantTimeEq::ct_eq(update.nonce.as_slice(), expected.nonce)) {
        return Err(ProvisionError::WrongNonce { what: WHAT });
    }
    if update.counter != expected.counter {
        return Err(ProvisionError::WrongCounter { what: WHAT, expected: expected.counter, found: update.counter });
    }
    Ok(update)
}
