//! Certificates and PKCS#10 requests signed by a vault key, through rcgen's external-key traits.
//!
//! The parameters follow the OPC UA application instance certificate profile (Part 6 §6.2.2): the ApplicationUri
//! as a subjectAltName URI, host names and addresses as DNS/IP names, digitalSignature + nonRepudiation +
//! keyEncipherment + dataEncipherment for RSA, and serverAuth + clientAuth.

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose,
    PublicKeyData, SanType, SignatureAlgorithm, SigningKey,
};
use serde::{Deserialize, Serialize};

use crate::error::{Result, VaultError};
use crate::key::{KeyAlgorithm, SignAlg, VaultKey};
use crate::pubkey::PublicKey;

/// What a certificate or CSR should say about its subject.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsrRequest {
    /// Subject common name.
    pub common_name: String,
    /// Subject organization, if any.
    #[serde(default)]
    pub organization: Option<String>,
    /// The OPC UA ApplicationUri (subjectAltName URI).
    #[serde(default)]
    pub application_uri: Option<String>,
    /// DNS names (subjectAltName).
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// IP addresses (subjectAltName).
    #[serde(default)]
    pub ip_addresses: Vec<IpAddr>,
}

impl CsrRequest {
    /// Builds rcgen parameters for an application instance (end-entity) certificate.
    pub fn to_params(&self, key_alg: KeyAlgorithm) -> Result<CertificateParams> {
        let bad = |e: rcgen::Error| VaultError::InvalidInput(format!("certificate parameters: {e}"));
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, self.common_name.as_str());
        if let Some(o) = &self.organization {
            dn.push(DnType::OrganizationName, o.as_str());
        }
        params.distinguished_name = dn;
        if let Some(uri) = &self.application_uri {
            params.subject_alt_names.push(SanType::URI(uri.as_str().try_into().map_err(bad)?));
        }
        for dns in &self.dns_names {
            params.subject_alt_names.push(SanType::DnsName(dns.as_str().try_into().map_err(bad)?));
        }
        for ip in &self.ip_addresses {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::ContentCommitment];
        if key_alg.is_rsa() {
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
            params.key_usages.push(KeyUsagePurpose::DataEncipherment);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        Ok(params)
    }
}

/// Sets the validity of `params` to start an hour ago (clock skew) and last `valid_for`.
pub fn set_validity(params: &mut CertificateParams, valid_for: Duration) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::seconds(valid_for.as_secs().min(i64::MAX as u64) as i64);
}

/// A vault key seen through rcgen's external-key traits. Certificates and CSRs are signed with PKCS#1 v1.5 SHA-256
/// for RSA keys (what the OPC UA RSA certificate profile requires) and ECDSA for EC keys.
pub struct RcgenKey<'a> {
    key: &'a dyn VaultKey,
    public: PublicKey,
    alg: SignAlg,
    rcgen_alg: &'static SignatureAlgorithm,
}

impl<'a> RcgenKey<'a> {
    /// Wraps `key`.
    pub fn new(key: &'a dyn VaultKey) -> Result<Self> {
        let public = PublicKey::from_spki(&key.info().spki_der)?;
        let (alg, rcgen_alg) = match key.info().algorithm {
            KeyAlgorithm::Rsa { .. } => (SignAlg::RsaPkcs1Sha256, &rcgen::PKCS_RSA_SHA256),
            KeyAlgorithm::EcP256 => (SignAlg::EcdsaP256Sha256, &rcgen::PKCS_ECDSA_P256_SHA256),
            KeyAlgorithm::EcP384 => (SignAlg::EcdsaP384Sha384, &rcgen::PKCS_ECDSA_P384_SHA384),
        };
        Ok(RcgenKey { key, public, alg, rcgen_alg })
    }
}

impl PublicKeyData for RcgenKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.public.raw_bytes()
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.rcgen_alg
    }
}

impl SigningKey for RcgenKey<'_> {
    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        self.key.sign_der(self.alg, msg).map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

/// A public key alone, for certificates issued to keys held elsewhere.
pub struct PublicOnly {
    public: PublicKey,
    rcgen_alg: &'static SignatureAlgorithm,
}

impl PublicOnly {
    /// From a DER SubjectPublicKeyInfo.
    pub fn from_spki(spki: &[u8]) -> Result<Self> {
        let public = PublicKey::from_spki(spki)?;
        let rcgen_alg = match public.algorithm() {
            KeyAlgorithm::Rsa { .. } => &rcgen::PKCS_RSA_SHA256,
            KeyAlgorithm::EcP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::EcP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        };
        Ok(PublicOnly { public, rcgen_alg })
    }
}

impl PublicKeyData for PublicOnly {
    fn der_bytes(&self) -> &[u8] {
        self.public.raw_bytes()
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.rcgen_alg
    }
}

fn rcgen_err(e: rcgen::Error) -> VaultError {
    match e {
        rcgen::Error::RemoteKeyError => VaultError::Crypto("the vault refused to sign".into()),
        other => VaultError::InvalidInput(format!("certificate: {other}")),
    }
}

/// Makes a PKCS#10 CSR (DER) for `key`, signed by it.
pub fn create_csr(key: &dyn VaultKey, request: &CsrRequest) -> Result<Vec<u8>> {
    let signer = RcgenKey::new(key)?;
    let params = request.to_params(key.info().algorithm)?;
    let csr = params.serialize_request(&signer).map_err(rcgen_err)?;
    Ok(csr.der().to_vec())
}

/// Makes a self-signed certificate (DER) for `key`.
pub fn self_signed(key: &dyn VaultKey, request: &CsrRequest, valid_for: Duration) -> Result<Vec<u8>> {
    let signer = RcgenKey::new(key)?;
    let mut params = request.to_params(key.info().algorithm)?;
    set_validity(&mut params, valid_for);
    if key.info().algorithm.is_rsa() {
        // A self-signed application certificate is its own issuer, so it may also sign certificates (Part 6).
        params.key_usages.push(KeyUsagePurpose::KeyCertSign);
    }
    Ok(params.self_signed(&signer).map_err(rcgen_err)?.der().to_vec())
}

/// Makes a self-signed CA certificate for `key`.
pub fn self_signed_ca(key: &dyn VaultKey, common_name: &str, valid_for: Duration) -> Result<Vec<u8>> {
    let signer = RcgenKey::new(key)?;
    let mut params = ca_params(common_name);
    set_validity(&mut params, valid_for);
    Ok(params.self_signed(&signer).map_err(rcgen_err)?.der().to_vec())
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

/// Issues an end-entity certificate for `subject_spki` from a CA whose key is `ca_key` and certificate `ca_cert`.
pub fn issue(
    ca_key: &dyn VaultKey,
    ca_cert_der: &[u8],
    subject_spki: &[u8],
    request: &CsrRequest,
    valid_for: Duration,
) -> Result<Vec<u8>> {
    let signer = RcgenKey::new(ca_key)?;
    let issuer = Issuer::from_ca_cert_der(&ca_cert_der.into(), signer).map_err(rcgen_err)?;
    let subject = PublicOnly::from_spki(subject_spki)?;
    let mut params = request.to_params(subject.public.algorithm())?;
    set_validity(&mut params, valid_for);
    Ok(params.signed_by(&subject, &issuer).map_err(rcgen_err)?.der().to_vec())
}

/// Issues a certificate from a PKCS#10 CSR (DER), after checking the CSR's signature.
pub fn issue_from_csr(
    ca_key: &dyn VaultKey,
    ca_cert_der: &[u8],
    csr_der: &[u8],
    valid_for: Duration,
) -> Result<Vec<u8>> {
    let signer = RcgenKey::new(ca_key)?;
    let issuer = Issuer::from_ca_cert_der(&ca_cert_der.into(), signer).map_err(rcgen_err)?;
    let mut csr = rcgen::CertificateSigningRequestParams::from_der(&csr_der.into()).map_err(rcgen_err)?;
    set_validity(&mut csr.params, valid_for);
    Ok(csr.signed_by(&issuer).map_err(rcgen_err)?.der().to_vec())
}
