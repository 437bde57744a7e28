//! Certificate provisioning, device side, and the file formats the central and the device exchange.
//!
//! Three files, each a CMS `SignedData` (RFC 5652) whose encapsulated content is a JSON document under an
//! eContentType OID of ours ([`oid`]); `openssl cms -cmsout -print -inform DER` reads all of them. The format is
//! documented in `docs/provisioning.md`.
//! - [`request::Request`]: the device asks for certificates; signed inside the vault by the device identity key
//!   ([`DEVICE_KEY_LABEL`]). The central calls [`request::verify_request`].
//! - [`update::Update`]: the central answers with chains and, for keys it made, the private key sealed
//!   ([`seal`], CMS `EnvelopedData`, RSA-OAEP-SHA-256 + AES-256-CBC) to the device's transport key
//!   ([`TRANSPORT_KEY_LABEL`]). Signed by the central's vault key; the device calls [`update::verify_update`].
//! - [`receipt::Receipt`]: the device confirms what it stored; the central calls [`receipt::verify_receipt`].
//!
//! Private keys never appear in clear in any of these types: a sealed key is opened only inside the vault (vaultd
//! or `C_UnwrapKey` on a token), by crate-private code.

pub mod device;
pub mod envelope;
pub mod keymaker;
pub mod receipt;
pub mod request;
pub mod seal;
pub mod update;

mod b64;

pub use keymaker::{KeyMaker, SealedKeys};
pub use receipt::{verify_receipt, Receipt, Thumbprint};
pub use request::{verify_request, KeyOrigin, Request, RequestItem};
pub use seal::{OaepHash, Recipient};
pub use update::{verify_update, Expected, Update, UpdateItem};

use crate::error::VaultError;

/// Label of the device identity key (ECDSA P-256, made inside at `certvault init` / `certvault device init`): it
/// signs requests and receipts.
pub const DEVICE_KEY_LABEL: &str = "certvault:device";
/// Label of the transport key (RSA-2048, decrypt-only, used only inside the vault to open sealed keys).
pub const TRANSPORT_KEY_LABEL: &str = "certvault:transport";
/// Labels with this prefix belong to the vault itself: clients cannot make, import or replace such keys.
pub const RESERVED_PREFIX: &str = "certvault:";
/// Version of the JSON documents inside the envelopes.
pub const FORMAT_VERSION: u32 = 1;
/// Length of a request nonce in bytes.
pub const NONCE_LEN: usize = 32;

/// Object identifiers of certvault's content types.
///
/// The arc `1.3.6.1.4.1.59142` is certvault's private-enterprise arc; if it must change (registration), it
/// changes here and in `docs/provisioning.md` only.
pub mod oid {
    // invariant: `new_unwrap` runs at compile time on these literals; a malformed one fails the build, not a run.
    use const_oid::ObjectIdentifier;
    /// eContentType of a request file's JSON document.
    pub const REQUEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.59142.1.1");
    /// eContentType of an update file's JSON document.
    pub const UPDATE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.59142.1.2");
    /// eContentType of a receipt file's JSON document.
    pub const RECEIPT: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.59142.1.3");
}

/// Whether a label belongs to the vault itself (see [`RESERVED_PREFIX`]).
pub fn is_reserved_label(label: &str) -> bool {
    label.starts_with(RESERVED_PREFIX)
}

/// The checks every provisioning document shares: its format version, a nonce of [`NONCE_LEN`] bytes, and at least
/// one item, each with a label that is 1..=128 characters, not reserved, and unique in the document.
fn validate_common<'a>(
    what: &'static str,
    version: u32,
    nonce: &[u8],
    labels: impl IntoIterator<Item = &'a str>,
) -> Result<()> {
    let bad = |why: String| ProvisionError::Invalid { what, why };
    if version != FORMAT_VERSION {
        return Err(ProvisionError::Version { what, found: version });
    }
    if nonce.len() != NONCE_LEN {
        return Err(bad(format!("the nonce is {} bytes, not {NONCE_LEN}", nonce.len())));
    }
    let labels: Vec<&str> = labels.into_iter().collect();
    if labels.is_empty() {
        return Err(bad("no items".into()));
    }
    for (i, label) in labels.iter().enumerate() {
        if label.is_empty() || label.len() > 128 || is_reserved_label(label) {
            return Err(bad(format!("item {i}: label {label:?} is empty, too long or reserved")));
        }
        if labels[..i].contains(label) {
            return Err(bad(format!("item {i}: label {label:?} appears twice")));
        }
    }
    Ok(())
}

/// Why a provisioning file was refused. Every tamper, replay or mix-up has its own variant, so that the central
/// and the operator can tell "someone changed this file" from "this file is old" from "this file is for another
/// dongle".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// Not DER, not CMS SignedData, truncated, or the JSON inside does not parse.
    #[error("not a valid {what} file: {why}")]
    Malformed {
        /// Which file.
        what: &'static str,
        /// What failed to parse.
        why: String,
    },
    /// A valid envelope of another kind (e.g. a request given where an update is expected).
    #[error("wrong kind of file: expected the {expected} file, found content type {found}")]
    WrongKind {
        /// Expected kind.
        expected: &'static str,
        /// The content type found.
        found: String,
    },
    /// The document's format version is not one this build reads.
    #[error("{what} format version {found} is not supported; this build reads version {FORMAT_VERSION}")]
    Version {
        /// Which file.
        what: &'static str,
        /// Version found.
        found: u32,
    },
    /// The envelope has a field our files never carry, or a field differs from what the signed content says.
    #[error("the {what} envelope is not in certvault's form: {why} (was it changed after signing?)")]
    Envelope {
        /// Which file.
        what: &'static str,
        /// What is wrong.
        why: String,
    },
    /// The content does not hash to the signed message digest.
    #[error("the {what} content does not match its signed digest: the file was changed after signing")]
    DigestMismatch {
        /// Which file.
        what: &'static str,
    },
    /// The signature does not verify with the signer's key.
    #[error("the {what} signature does not verify: the file was changed after signing, or forged")]
    BadSignature {
        /// Which file.
        what: &'static str,
    },
    /// The file was signed by another key or certificate than the one expected.
    #[error("the {what} was not signed by {expected}: {why}")]
    WrongSigner {
        /// Which file.
        what: &'static str,
        /// Who should have signed.
        expected: &'static str,
        /// What was found instead.
        why: String,
    },
    /// The file names another dongle.
    #[error("the {what} is for dongle {found:?}, not for {expected:?}")]
    WrongSerial {
        /// Which file.
        what: &'static str,
        /// This dongle.
        expected: String,
        /// The dongle the file names.
        found: String,
    },
    /// The file answers another request than the one the device waits for.
    #[error(
        "the {what} answers another request (nonce mismatch): a replay, or a request this device no longer waits for"
    )]
    WrongNonce {
        /// Which file.
        what: &'static str,
    },
    /// The file's update counter is not the next one.
    #[error("the {what} carries update counter {found}, expected {expected}: a replayed or reordered file")]
    WrongCounter {
        /// Which file.
        what: &'static str,
        /// The counter expected.
        expected: u64,
        /// The counter found.
        found: u64,
    },
    /// The document parses but says something impossible (empty label, CSR missing, bad nonce length, ...).
    #[error("invalid {what}: {why}")]
    Invalid {
        /// Which file.
        what: &'static str,
        /// What is wrong.
        why: String,
    },
    /// The vault refused or failed an operation (signing, opening a sealed key).
    #[error(transparent)]
    Vault(#[from] VaultError),
}

impl From<ProvisionError> for VaultError {
    fn from(e: ProvisionError) -> Self {
        match e {
            ProvisionError::Vault(v) => v,
            other => VaultError::InvalidInput(other.to_string()),
        }
    }
}

/// Result alias of the provisioning module.
pub type Result<T, E = ProvisionError> = std::result::Result<T, E>;

/// SHA-256 of a DER certificate as lower-case hex: the thumbprint receipts and the central use.
pub fn thumbprint(cert_der: &[u8]) -> String {
    hex::encode(crate::HashAlg::Sha256.digest(cert_der))
}

/// A fresh random nonce.
pub fn fresh_nonce() -> Result<[u8; NONCE_LEN]> {
    let mut n = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut n).map_err(|_| VaultError::Crypto("no randomness".into()))?;
    Ok(n)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests;
