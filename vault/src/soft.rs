//! Software keys on AWS-LC (constant-time RSA and ECDSA).
//!
//! This is the crypto *inside* `vaultd`, and the in-process baseline for benchmarks. Application code never gets a
//! `SoftKey`: it talks to the daemon or to a token, and holds only handles.

use std::fmt;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{
    KeyPair as RsaKeyPair, KeySize, OaepPrivateDecryptingKey, Pkcs1PrivateDecryptingKey, PrivateDecryptingKey,
    OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256,
};
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING,
};
use zeroize::Zeroizing;

use crate::error::{Result, VaultError};
use crate::key::{check_decrypt, check_sign, DecryptAlg, KeyAlgorithm, KeyInfo, KeyPolicy, SignAlg, VaultKey};

/// DigestInfo prefix of SHA-1 for PKCS#1 v1.5 signatures (RFC 8017 §9.2 note 1).
const SHA1_DIGEST_INFO: [u8; 15] =
    [0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14];

enum Inner {
    Rsa {
        sign: RsaKeyPair,
        decrypt: PrivateDecryptingKey,
        // Only for SHA-1 PKCS#1 signatures, which AWS-LC's safe API does not offer; loaded on first use.
        legacy: Box<std::sync::OnceLock<rsa::PrivateKey>>,
    },
    Ec(EcdsaKeyPair),
}

/// A private key in this process's memory. Used by `vaultd` and by benchmarks only.
pub struct SoftKey {
    info: KeyInfo,
    pkcs8: Zeroizing<Vec<u8>>,
    inner: Inner,
}

impl fmt::Debug for SoftKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftKey").field("info", &self.info).finish_non_exhaustive()
    }
}

/// Generates a fresh key and returns it as PKCS#8 DER (to be sealed in a container at once).
pub fn generate_pkcs8(alg: KeyAlgorithm) -> Result<Zeroizing<Vec<u8>>> {
    let crypto = |e: aws_lc_rs::error::Unspecified| VaultError::Crypto(format!("key generation: {e}"));
    match alg {
        KeyAlgorithm::Rsa { bits } => {
            let size = match bits {
                2048 => KeySize::Rsa2048,
                3072 => KeySize::Rsa3072,
                4096 => KeySize::Rsa4096,
                other => {
                    return Err(VaultError::InvalidInput(format!(
                        "RSA keys are made with 2048, 3072 or 4096 bits, not {other}"
                    )))
                }
            };
            let kp = RsaKeyPair::generate(size).map_err(crypto)?;
            let der: Pkcs8V1Der = kp.as_der().map_err(crypto)?;
            Ok(Zeroizing::new(der.as_ref().to_vec()))
        }
        KeyAlgorithm::EcP256 | KeyAlgorithm::EcP384 => {
            let kp = EcdsaKeyPair::generate(ec_alg(alg)).map_err(crypto)?;
            let doc = kp.to_pkcs8v1().map_err(crypto)?;
            Ok(Zeroizing::new(doc.as_ref().to_vec()))
        }
    }
}

fn ec_alg(alg: KeyAlgorithm) -> &'static signature::EcdsaSigningAlgorithm {
    if alg == KeyAlgorithm::EcP384 {
        &ECDSA_P384_SHA384_FIXED_SIGNING
    } else {
        &ECDSA_P256_SHA256_FIXED_SIGNING
    }
}

impl SoftKey {
    /// Loads a PKCS#8 private key (RSA 2048..=8192, P-256 or P-384).
    pub fn from_pkcs8(
        pkcs8: Zeroizing<Vec<u8>>,
        id: Vec<u8>,
        label: String,
        made_inside: bool,
        policy: KeyPolicy,
    ) -> Result<Self> {
        let (inner, algorithm, spki_der) = if let Ok(sign) = RsaKeyPair::from_pkcs8(&pkcs8) {
            let decrypt = PrivateDecryptingKey::from_pkcs8(&pkcs8)
                .map_err(|e| VaultError::InvalidInput(format!("RSA key rejected: {e}")))?;
            let spki: PublicKeyX509Der =
                sign.public_key().as_der().map_err(|e| VaultError::Crypto(format!("public key encoding: {e}")))?;
            let bits = (sign.public_modulus_len() * 8) as u32;
            let spki = spki.as_ref().to_vec();
            (Inner::Rsa { sign, decrypt, legacy: Box::default() }, KeyAlgorithm::Rsa { bits }, spki)
        } else {
            let mut found = None;
            for alg in [KeyAlgorithm::EcP256, KeyAlgorithm::EcP384] {
                if let Ok(kp) = EcdsaKeyPair::from_pkcs8(ec_alg(alg), &pkcs8) {
                    found = Some((kp, alg));
                    break;
                }
            }
            let (kp, alg) = found.ok_or_else(|| {
                VaultError::InvalidInput("not a PKCS#8 RSA (2048 to 8192 bits), P-256 or P-384 private key".into())
            })?;
            let spki: PublicKeyX509Der =
                kp.public_key().as_der().map_err(|e| VaultError::Crypto(format!("public key encoding: {e}")))?;
            let spki = spki.as_ref().to_vec();
            (Inner::Ec(kp), alg, spki)
        };
        Ok(SoftKey {
            info: KeyInfo { id, label, algorithm, spki_der, made_inside, non_exportable: true, policy },
            pkcs8,
            inner,
        })
    }

    /// The key's PKCS#8 encoding, for sealing into a container. Crate-private: nothing outside the daemon's storage
    /// may see it.
    pub(crate) fn pkcs8(&self) -> &Zeroizing<Vec<u8>> {
        &self.pkcs8
    }

    fn legacy_sha1(&self, legacy: &std::sync::OnceLock<rsa::PrivateKey>, msg: &[u8]) -> Result<Vec<u8>> {
        use rsa::pkcs8::DecodePrivateKey;
        let key = match legacy.get() {
            Some(k) => k,
            None => {
                let k = rsa::PrivateKey::from_pkcs8_der(&self.pkcs8)
                    .map_err(|e| VaultError::Crypto(format!("loading key for SHA-1 signing: {e}")))?;
                legacy.get_or_init(|| k)
            }
        };
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, msg);
        let mut info = SHA1_DIGEST_INFO.to_vec();
        info.extend_from_slice(digest.as_ref());
        key.sign(rsa::Pkcs1v15Sign::new_unprefixed(), &info)
            .map_err(|e| VaultError::Crypto(format!("SHA-1 signature: {e}")))
    }
}

impl VaultKey for SoftKey {
    fn info(&self) -> &KeyInfo {
        &self.info
    }

    fn sign(&self, alg: SignAlg, msg: &[u8]) -> Result<Vec<u8>> {
        check_sign(&self.info, alg)?;
        let crypto = |e: aws_lc_rs::error::Unspecified| VaultError::Crypto(format!("{alg}: {e}"));
        match &self.inner {
            Inner::Rsa { sign, legacy, .. } => {
                let enc: &'static dyn signature::RsaEncoding = match alg {
                    SignAlg::RsaPkcs1Sha1 => return self.legacy_sha1(legacy, msg),
                    SignAlg::RsaPkcs1Sha256 => &signature::RSA_PKCS1_SHA256,
                    SignAlg::RsaPkcs1Sha384 => &signature::RSA_PKCS1_SHA384,
                    SignAlg::RsaPkcs1Sha512 => &signature::RSA_PKCS1_SHA512,
                    SignAlg::RsaPssSha256 => &signature::RSA_PSS_SHA256,
                    SignAlg::RsaPssSha384 => &signature::RSA_PSS_SHA384,
                    SignAlg::RsaPssSha512 => &signature::RSA_PSS_SHA512,
                    SignAlg::EcdsaP256Sha256 | SignAlg::EcdsaP384Sha384 => {
                        return Err(VaultError::Crypto("ECDSA on an RSA key".into()))
                    }
                };
                let mut out = vec![0u8; sign.public_modulus_len()];
                sign.sign(enc, &SystemRandom::new(), msg, &mut out).map_err(crypto)?;
                Ok(out)
            }
            Inner::Ec(kp) => Ok(kp.sign(&SystemRandom::new(), msg).map_err(crypto)?.as_ref().to_vec()),
        }
    }

    fn decrypt(&self, alg: DecryptAlg, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        check_decrypt(&self.info, alg, ciphertext)?;
        let Inner::Rsa { decrypt, .. } = &self.inner else {
            return Err(VaultError::DecryptFailed);
        };
        let mut out = Zeroizing::new(vec![0u8; ciphertext.len()]);
        let n = match alg {
            DecryptAlg::RsaOaepSha1 | DecryptAlg::RsaOaepSha256 => {
                let oaep = OaepPrivateDecryptingKey::new(decrypt.clone()).map_err(|_| VaultError::DecryptFailed)?;
                let params = if alg == DecryptAlg::RsaOaepSha1 { &OAEP_SHA1_MGF1SHA1 } else { &OAEP_SHA256_MGF1SHA256 };
                oaep.decrypt(params, ciphertext, &mut out, None).map_err(|_| VaultError::DecryptFailed)?.len()
            }
            DecryptAlg::RsaPkcs1v15 => {
                let p = Pkcs1PrivateDecryptingKey::new(decrypt.clone()).map_err(|_| VaultError::DecryptFailed)?;
                p.decrypt(ciphertext, &mut out).map_err(|_| VaultError::DecryptFailed)?.len()
            }
        };
        out.truncate(n);
        Ok(out)
    }
}
