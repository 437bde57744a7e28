//! Public-key operations: verifying a peer's signature and encrypting to a peer's key. No secret is involved, so
//! these run in software wherever they are needed.

use aws_lc_rs::rsa::{
    OaepPublicEncryptingKey, Pkcs1PublicEncryptingKey, PublicEncryptingKey, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256,
};
use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};

use crate::error::{Result, VaultError};
use crate::key::{DecryptAlg, KeyAlgorithm, SignAlg};

/// A public key parsed from a DER SubjectPublicKeyInfo.
///
/// ```
/// # use certvault::{soft, KeyAlgorithm, KeyPolicy, SignAlg, VaultKey, PublicKey};
/// let key = soft::SoftKey::from_pkcs8(soft::generate_pkcs8(KeyAlgorithm::EcP256)?, vec![1], "k".into(), true,
///     KeyPolicy::default())?;
/// let sig = key.sign(SignAlg::EcdsaP256Sha256, b"hello")?;
/// PublicKey::from_spki(&key.info().spki_der)?.verify(SignAlg::EcdsaP256Sha256, b"hello", &sig)?;
/// # Ok::<(), certvault::VaultError>(())
/// ```
#[derive(Clone, Debug)]
pub struct PublicKey {
    spki: Vec<u8>,
    /// The BIT STRING content: PKCS#1 RSAPublicKey or the uncompressed EC point.
    raw: Vec<u8>,
    algorithm: KeyAlgorithm,
}

impl PublicKey {
    /// Parses a DER SubjectPublicKeyInfo.
    pub fn from_spki(spki: &[u8]) -> Result<Self> {
        use x509_parser::prelude::FromDer;
        use x509_parser::public_key::PublicKey as P;
        let (rest, parsed) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki)
            .map_err(|e| VaultError::InvalidInput(format!("SubjectPublicKeyInfo: {e}")))?;
        if !rest.is_empty() {
            return Err(VaultError::InvalidInput("trailing bytes after SubjectPublicKeyInfo".into()));
        }
        let algorithm = match parsed.parsed() {
            Ok(P::RSA(rsa)) => KeyAlgorithm::Rsa { bits: rsa.key_size() as u32 },
            Ok(P::EC(point)) => match point.key_size() {
                256 => KeyAlgorithm::EcP256,
                384 => KeyAlgorithm::EcP384,
                n => return Err(VaultError::InvalidInput(format!("EC key of {n} bits is not supported"))),
            },
            _ => return Err(VaultError::InvalidInput("only RSA and EC P-256/P-384 public keys are supported".into())),
        };
        Ok(PublicKey { spki: spki.to_vec(), raw: parsed.subject_public_key.data.to_vec(), algorithm })
    }

    /// Takes the public key out of a DER X.509 certificate.
    pub fn from_certificate(cert_der: &[u8]) -> Result<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
            .map_err(|e| VaultError::InvalidInput(format!("certificate: {e}")))?;
        Self::from_spki(cert.public_key().raw)
    }

    /// Kind and size of the key.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// The SubjectPublicKeyInfo's BIT STRING content (what rcgen's `PublicKeyData::der_bytes` wants).
    pub fn raw_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// Verifies `sig` over `msg`. ECDSA signatures are raw r||s.
    pub fn verify(&self, alg: SignAlg, msg: &[u8], sig: &[u8]) -> Result<()> {
        if !alg.fits(self.algorithm) {
            return Err(VaultError::InvalidInput(format!("{alg} does not fit a {} key", self.algorithm)));
        }
        let v: &'static dyn VerificationAlgorithm = match alg {
            SignAlg::RsaPkcs1Sha1 => &signature::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY,
            SignAlg::RsaPkcs1Sha256 => &signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
            SignAlg::RsaPkcs1Sha384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            SignAlg::RsaPkcs1Sha512 => &signature::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY,
            SignAlg::RsaPssSha256 => &signature::RSA_PSS_2048_8192_SHA256,
            SignAlg::RsaPssSha384 => &signature::RSA_PSS_2048_8192_SHA384,
            SignAlg::RsaPssSha512 => &signature::RSA_PSS_2048_8192_SHA512,
            SignAlg::EcdsaP256Sha256 => &signature::ECDSA_P256_SHA256_FIXED,
            SignAlg::EcdsaP384Sha384 => &signature::ECDSA_P384_SHA384_FIXED,
        };
        UnparsedPublicKey::new(v, &self.raw)
            .verify(msg, sig)
            .map_err(|_| VaultError::InvalidInput(format!("{alg} signature does not verify")))
    }

    /// Encrypts one block to this RSA key.
    pub fn encrypt(&self, alg: DecryptAlg, plaintext: &[u8]) -> Result<Vec<u8>> {
        let KeyAlgorithm::Rsa { bits } = self.algorithm else {
            return Err(VaultError::InvalidInput("only RSA keys encrypt".into()));
        };
        let bad = |e: aws_lc_rs::error::Unspecified| VaultError::Crypto(format!("{alg} encryption: {e}"));
        let key = PublicEncryptingKey::from_der(&self.spki)
            .map_err(|e| VaultError::InvalidInput(format!("RSA public key: {e}")))?;
        let mut out = vec![0u8; (bits as usize).div_ceil(8)];
        if plaintext.len() > alg.max_plaintext(out.len()) {
            return Err(VaultError::InvalidInput(format!(
                "{} bytes do not fit one {alg} block of this key (max {})",
                plaintext.len(),
                alg.max_plaintext(out.len())
            )));
        }
        let n = match alg {
            DecryptAlg::RsaOaepSha1 | DecryptAlg::RsaOaepSha256 => {
                let params = if alg == DecryptAlg::RsaOaepSha1 { &OAEP_SHA1_MGF1SHA1 } else { &OAEP_SHA256_MGF1SHA256 };
                OaepPublicEncryptingKey::new(key)
                    .map_err(bad)?
                    .encrypt(params, plaintext, &mut out, None)
                    .map_err(bad)?
                    .len()
            }
            DecryptAlg::RsaPkcs1v15 => {
                Pkcs1PublicEncryptingKey::new(key).map_err(bad)?.encrypt(plaintext, &mut out).map_err(bad)?.len()
            }
        };
        out.truncate(n);
        Ok(out)
    }
}
