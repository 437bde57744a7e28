//! Certificate helpers: OPC UA thumbprints, and a CRL signed by a CA whose key is in a vault.
//!
//! OPC UA (Part 4 §6.1.3) wants every certificate a CA issued to be checked against a CRL of that CA: a trust list
//! that holds a CA certificate without its CRL refuses the CA's certificates with BadCertificateRevocationUnknown.
//! So the demo CA publishes an (empty) CRL next to its certificate.

use std::time::Duration;

use certvault::csr::RcgenKey;
use certvault::VaultKey;
use certvault_opcua::pki::{split_chain, Cert};
use rcgen::{CertificateRevocationListParams, Issuer, KeyIdMethod, SerialNumber};

/// Why a certificate helper failed.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// The bytes are not a certificate (chain).
    #[error("not a DER certificate: {0}")]
    NotACertificate(String),
    /// The vault or rcgen refused.
    #[error("signing the CRL: {0}")]
    Crl(String),
}

/// The leaf of a DER certificate chain (concatenated DER certificates, leaf first).
pub fn leaf(chain: &[u8]) -> Result<Cert, CertsError> {
    let first = split_chain(chain).map_err(CertsError::NotACertificate)?.into_iter().next();
    let first = first.ok_or_else(|| CertsError::NotACertificate("empty".into()))?;
    Cert::from_der(&first).map_err(CertsError::NotACertificate)
}

/// The OPC UA thumbprint (SHA-1 of the leaf's DER, lower-case hex) of a DER certificate chain.
pub fn thumbprint(chain: &[u8]) -> Result<String, CertsError> {
    Ok(crate::records::hex(&leaf(chain)?.thumbprint()))
}

/// A CRL (DER) of the CA `ca_cert` listing no certificate, signed inside the vault by `ca_key`, valid for
/// `valid_for`.
pub fn empty_crl(
    ca_key: &dyn VaultKey,
    ca_cert: &[u8],
    crl_number: u64,
    valid_for: Duration,
) -> Result<Vec<u8>, CertsError> {
    let signer = RcgenKey::new(ca_key).map_err(|e| CertsError::Crl(e.to_string()))?;
    let issuer = Issuer::from_ca_cert_der(&ca_cert.into(), signer).map_err(|e| CertsError::Crl(e.to_string()))?;
    let now = time::OffsetDateTime::now_utc();
    let params = CertificateRevocationListParams {
        this_update: now - time::Duration::hours(1),
        next_update: now + time::Duration::seconds(valid_for.as_secs().min(i64::MAX as u64) as i64),
        crl_number: SerialNumber::from(crl_number),
        issuing_distribution_point: None,
        revoked_certs: Vec::new(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    Ok(params.signed_by(&issuer).map_err(|e| CertsError::Crl(e.to_string()))?.der().to_vec())
}
