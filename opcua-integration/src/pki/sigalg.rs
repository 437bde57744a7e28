//! Signature algorithms of certificates and CRLs, and their verification through certvault's public-key code.

use certvault::{HashAlg, KeyAlgorithm, PublicKey, SignAlg};
use x509_parser::der_parser::oid;
use x509_parser::oid_registry::{
    OID_HASH_SHA1, OID_NIST_HASH_SHA256, OID_NIST_HASH_SHA384, OID_NIST_HASH_SHA512, OID_PKCS1_RSASSAPSS,
    OID_PKCS1_SHA1WITHRSA, OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA, OID_PKCS1_SHA512WITHRSA,
    OID_SHA1_WITH_RSA, OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384,
};
use x509_parser::signature_algorithm::RsaSsaPssParams;
use x509_parser::x509::AlgorithmIdentifier;

/// The signature algorithm of a certificate or CRL, reduced to what certvault can verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertSigAlg {
    /// RSASSA-PKCS1-v1_5 with the given hash.
    RsaPkcs1(HashAlg),
    /// RSASSA-PSS with the given hash, MGF1 with the same hash and salt = hash length.
    RsaPss(HashAlg),
    /// ECDSA with the given hash.
    Ecdsa(HashAlg),
    /// Anything else; the text names it for messages.
    Unsupported(String),
}

impl CertSigAlg {
    /// Reads an AlgorithmIdentifier.
    pub fn from_identifier(id: &AlgorithmIdentifier) -> CertSigAlg {
        let alg = &id.algorithm;
        if *alg == OID_PKCS1_SHA256WITHRSA {
            CertSigAlg::RsaPkcs1(HashAlg::Sha256)
        } else if *alg == OID_PKCS1_SHA384WITHRSA {
            CertSigAlg::RsaPkcs1(HashAlg::Sha384)
        } else if *alg == OID_PKCS1_SHA512WITHRSA {
            CertSigAlg::RsaPkcs1(HashAlg::Sha512)
        } else if *alg == OID_PKCS1_SHA1WITHRSA || *alg == OID_SHA1_WITH_RSA {
            CertSigAlg::RsaPkcs1(HashAlg::Sha1)
        } else if *alg == OID_SIG_ECDSA_WITH_SHA256 {
            CertSigAlg::Ecdsa(HashAlg::Sha256)
        } else if *alg == OID_SIG_ECDSA_WITH_SHA384 {
            CertSigAlg::Ecdsa(HashAlg::Sha384)
        } else if *alg == OID_PKCS1_RSASSAPSS {
            pss(id).unwrap_or_else(|| CertSigAlg::Unsupported("RSASSA-PSS with unsupported parameters".into()))
        } else {
            CertSigAlg::Unsupported(alg.to_id_string())
        }
    }

    /// The hash the signature is made over.
    pub fn hash(&self) -> Option<HashAlg> {
        match self {
            CertSigAlg::RsaPkcs1(h) | CertSigAlg::RsaPss(h) | CertSigAlg::Ecdsa(h) => Some(*h),
            CertSigAlg::Unsupported(_) => None,
        }
    }

    /// A name for messages.
    pub fn name(&self) -> String {
        match self {
            CertSigAlg::RsaPkcs1(h) => format!("RSA PKCS#1 v1.5 with {h:?}"),
            CertSigAlg::RsaPss(h) => format!("RSA-PSS with {h:?}"),
            CertSigAlg::Ecdsa(h) => format!("ECDSA with {h:?}"),
            CertSigAlg::Unsupported(s) => format!("unsupported algorithm {s}"),
        }
    }
}

/// Only the PSS parameter sets certvault verifies are accepted: hash = MGF1 hash, salt = hash length, trailer 1.
fn pss(id: &AlgorithmIdentifier) -> Option<CertSigAlg> {
    let params = RsaSsaPssParams::try_from(id.parameters.as_ref()?).ok()?;
    let hash = hash_from_oid(params.hash_algorithm_oid())?;
    let mgf = params.mask_gen_algorithm().ok()?;
    let salt_ok = params.salt_length() as usize == hash.output_len();
    let mgf_ok = mgf.mgf == oid!(1.2.840 .113549 .1 .1 .8) && hash_from_oid(&mgf.hash) == Some(hash);
    (salt_ok && mgf_ok && params.trailer_field() == 1 && hash != HashAlg::Sha1).then_some(CertSigAlg::RsaPss(hash))
}

fn hash_from_oid(o: &x509_parser::der_parser::oid::Oid) -> Option<HashAlg> {
    if *o == OID_NIST_HASH_SHA256 {
        Some(HashAlg::Sha256)
    } else if *o == OID_NIST_HASH_SHA384 {
        Some(HashAlg::Sha384)
    } else if *o == OID_NIST_HASH_SHA512 {
        Some(HashAlg::Sha512)
    } else if *o == OID_HASH_SHA1 {
        Some(HashAlg::Sha1)
    } else {
        None
    }
}

/// Why a signature was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// The algorithm, or the algorithm with this key, cannot be checked (structure problem).
    Unsupported(String),
    /// The signature is wrong.
    Mismatch,
}

/// Verifies `signature` over `signed` with the signer's SubjectPublicKeyInfo `signer_spki`.
pub fn verify(signer_spki: &[u8], alg: &CertSigAlg, signed: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
    let key = PublicKey::from_spki(signer_spki).map_err(|e| VerifyError::Unsupported(format!("issuer key: {e}")))?;
    let key_alg = key.algorithm();
    let sign_alg = match (alg, key_alg) {
        (CertSigAlg::RsaPkcs1(h), KeyAlgorithm::Rsa { .. }) => match h {
            HashAlg::Sha1 => SignAlg::RsaPkcs1Sha1,
            HashAlg::Sha256 => SignAlg::RsaPkcs1Sha256,
            HashAlg::Sha384 => SignAlg::RsaPkcs1Sha384,
            HashAlg::Sha512 => SignAlg::RsaPkcs1Sha512,
        },
        (CertSigAlg::RsaPss(h), KeyAlgorithm::Rsa { .. }) => match h {
            HashAlg::Sha256 => SignAlg::RsaPssSha256,
            HashAlg::Sha384 => SignAlg::RsaPssSha384,
            HashAlg::Sha512 => SignAlg::RsaPssSha512,
            HashAlg::Sha1 => return Err(VerifyError::Unsupported("RSA-PSS with SHA-1".into())),
        },
        (CertSigAlg::Ecdsa(HashAlg::Sha256), KeyAlgorithm::EcP256) => SignAlg::EcdsaP256Sha256,
        (CertSigAlg::Ecdsa(HashAlg::Sha384), KeyAlgorithm::EcP384) => SignAlg::EcdsaP384Sha384,
        (alg, key) => return Err(VerifyError::Unsupported(format!("{} with a {key} key", alg.name()))),
    };
    let raw;
    let signature = match key_alg {
        // X.509 carries ECDSA signatures as DER; certvault verifies the raw r||s form OPC UA uses.
        KeyAlgorithm::EcP256 | KeyAlgorithm::EcP384 => {
            let field = if key_alg == KeyAlgorithm::EcP256 { 32 } else { 48 };
            raw = certvault::sig::ecdsa_der_to_raw(signature, field).map_err(|_| VerifyError::Mismatch)?;
            &raw[..]
        }
        KeyAlgorithm::Rsa { .. } => signature,
    };
    key.verify(sign_alg, signed, signature).map_err(|_| VerifyError::Mismatch)
}
