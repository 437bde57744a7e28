//! The seam between everything and the keys: [`VaultKey`] and the types that describe a key and its operations.
//!
//! A `VaultKey` is a handle. It never holds private key bytes (except [`crate::soft::SoftKey`], which exists only
//! inside the daemon and as a benchmark baseline), so the OPC UA stack and TLS can hold as many as they like.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Result, VaultError};

/// The kind and size of a key pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    /// RSA with the given modulus length in bits (2048, 3072 or 4096 for new keys).
    Rsa {
        /// Modulus length in bits.
        bits: u32,
    },
    /// ECDSA on NIST P-256.
    EcP256,
    /// ECDSA on NIST P-384.
    EcP384,
}

impl KeyAlgorithm {
    /// Parses the names the CLI and the configuration files use: `rsa2048`, `rsa3072`, `rsa4096`, `p256`, `p384`.
    ///
    /// ```
    /// use certvault::KeyAlgorithm;
    /// assert_eq!("rsa3072".parse::<KeyAlgorithm>().unwrap(), KeyAlgorithm::Rsa { bits: 3072 });
    /// assert!("rsa1024".parse::<KeyAlgorithm>().is_err());
    /// ```
    pub fn names() -> &'static [&'static str] {
        &["rsa2048", "rsa3072", "rsa4096", "p256", "p384"]
    }

    /// True for RSA keys.
    pub fn is_rsa(&self) -> bool {
        matches!(self, KeyAlgorithm::Rsa { .. })
    }

    /// Length of a signature made by this key, in bytes (ECDSA: the raw r||s form).
    pub fn signature_len(&self) -> usize {
        match self {
            KeyAlgorithm::Rsa { bits } => (*bits as usize).div_ceil(8),
            KeyAlgorithm::EcP256 => 64,
            KeyAlgorithm::EcP384 => 96,
        }
    }
}

impl std::str::FromStr for KeyAlgorithm {
    type Err = VaultError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "rsa2048" | "rsa-2048" | "rsa:2048" => Ok(KeyAlgorithm::Rsa { bits: 2048 }),
            "rsa3072" | "rsa-3072" | "rsa:3072" => Ok(KeyAlgorithm::Rsa { bits: 3072 }),
            "rsa4096" | "rsa-4096" | "rsa:4096" => Ok(KeyAlgorithm::Rsa { bits: 4096 }),
            "p256" | "ec-p256" | "ecp256" | "prime256v1" | "secp256r1" => Ok(KeyAlgorithm::EcP256),
            "p384" | "ec-p384" | "ecp384" | "secp384r1" => Ok(KeyAlgorithm::EcP384),
            other => Err(VaultError::InvalidInput(format!(
                "unknown key algorithm {other:?}; use one of {}",
                KeyAlgorithm::names().join(", ")
            ))),
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyAlgorithm::Rsa { bits } => write!(f, "rsa{bits}"),
            KeyAlgorithm::EcP256 => f.write_str("p256"),
            KeyAlgorithm::EcP384 => f.write_str("p384"),
        }
    }
}

/// A hash function used by a signature or padding scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HashAlg {
    /// SHA-1 (legacy OPC UA policies only).
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl HashAlg {
    /// Output length in bytes.
    pub fn output_len(&self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// Hashes `data`.
    pub fn digest(&self, data: &[u8]) -> Vec<u8> {
        use aws_lc_rs::digest;
        let alg = match self {
            HashAlg::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            HashAlg::Sha256 => &digest::SHA256,
            HashAlg::Sha384 => &digest::SHA384,
            HashAlg::Sha512 => &digest::SHA512,
        };
        digest::digest(alg, data).as_ref().to_vec()
    }
}

/// A signature algorithm. ECDSA signatures come back raw (r||s, fixed length) as OPC UA wants them; use
/// [`VaultKey::sign_der`] or [`crate::sig::ecdsa_raw_to_der`] where X.509 or TLS want DER.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-1 (Basic128Rsa15 and Basic256 only).
    RsaPkcs1Sha1,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RsaPkcs1Sha256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RsaPkcs1Sha384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RsaPkcs1Sha512,
    /// RSASSA-PSS with SHA-256, MGF1-SHA-256, salt 32 bytes.
    RsaPssSha256,
    /// RSASSA-PSS with SHA-384, MGF1-SHA-384, salt 48 bytes.
    RsaPssSha384,
    /// RSASSA-PSS with SHA-512, MGF1-SHA-512, salt 64 bytes.
    RsaPssSha512,
    /// ECDSA on P-256 over SHA-256.
    EcdsaP256Sha256,
    /// ECDSA on P-384 over SHA-384.
    EcdsaP384Sha384,
}

impl SignAlg {
    /// Every signature algorithm, for tests and capability listings.
    pub const ALL: [SignAlg; 9] = [
        SignAlg::RsaPkcs1Sha1,
        SignAlg::RsaPkcs1Sha256,
        SignAlg::RsaPkcs1Sha384,
        SignAlg::RsaPkcs1Sha512,
        SignAlg::RsaPssSha256,
        SignAlg::RsaPssSha384,
        SignAlg::RsaPssSha512,
        SignAlg::EcdsaP256Sha256,
        SignAlg::EcdsaP384Sha384,
    ];

    /// The hash the scheme signs.
    pub fn hash(&self) -> HashAlg {
        match self {
            SignAlg::RsaPkcs1Sha1 => HashAlg::Sha1,
            SignAlg::RsaPkcs1Sha256 | SignAlg::RsaPssSha256 | SignAlg::EcdsaP256Sha256 => HashAlg::Sha256,
            SignAlg::RsaPkcs1Sha384 | SignAlg::RsaPssSha384 | SignAlg::EcdsaP384Sha384 => HashAlg::Sha384,
            SignAlg::RsaPkcs1Sha512 | SignAlg::RsaPssSha512 => HashAlg::Sha512,
        }
    }

    /// True for RSA-PSS schemes.
    pub fn is_pss(&self) -> bool {
        matches!(self, SignAlg::RsaPssSha256 | SignAlg::RsaPssSha384 | SignAlg::RsaPssSha512)
    }

    /// True for ECDSA schemes.
    pub fn is_ecdsa(&self) -> bool {
        matches!(self, SignAlg::EcdsaP256Sha256 | SignAlg::EcdsaP384Sha384)
    }

    /// Whether a key of `key` can make this signature.
    pub fn fits(&self, key: KeyAlgorithm) -> bool {
        match (self, key) {
            (SignAlg::EcdsaP256Sha256, KeyAlgorithm::EcP256) => true,
            (SignAlg::EcdsaP384Sha384, KeyAlgorithm::EcP384) => true,
            (s, KeyAlgorithm::Rsa { .. }) => !s.is_ecdsa(),
            _ => false,
        }
    }
}

impl fmt::Display for SignAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            SignAlg::RsaPkcs1Sha1 => "rsa-pkcs1-sha1",
            SignAlg::RsaPkcs1Sha256 => "rsa-pkcs1-sha256",
            SignAlg::RsaPkcs1Sha384 => "rsa-pkcs1-sha384",
            SignAlg::RsaPkcs1Sha512 => "rsa-pkcs1-sha512",
            SignAlg::RsaPssSha256 => "rsa-pss-sha256",
            SignAlg::RsaPssSha384 => "rsa-pss-sha384",
            SignAlg::RsaPssSha512 => "rsa-pss-sha512",
            SignAlg::EcdsaP256Sha256 => "ecdsa-p256-sha256",
            SignAlg::EcdsaP384Sha384 => "ecdsa-p384-sha384",
        };
        f.write_str(s)
    }
}

/// A decryption algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecryptAlg {
    /// RSAES-OAEP with SHA-1 and MGF1-SHA-1 (Basic256Sha256, Aes128_Sha256_RsaOaep).
    RsaOaepSha1,
    /// RSAES-OAEP with SHA-256 and MGF1-SHA-256 (Aes256_Sha256_RsaPss).
    RsaOaepSha256,
    /// RSAES-PKCS1-v1_5: only for the deprecated Basic128Rsa15, and only on keys that enable it explicitly.
    RsaPkcs1v15,
}

impl DecryptAlg {
    /// Largest plaintext one block of a `modulus_len`-byte key carries.
    pub fn max_plaintext(&self, modulus_len: usize) -> usize {
        let overhead = match self {
            DecryptAlg::RsaOaepSha1 => 42,
            DecryptAlg::RsaOaepSha256 => 66,
            DecryptAlg::RsaPkcs1v15 => 11,
        };
        modulus_len.saturating_sub(overhead)
    }
}

impl fmt::Display for DecryptAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecryptAlg::RsaOaepSha1 => "rsa-oaep-sha1",
            DecryptAlg::RsaOaepSha256 => "rsa-oaep-sha256",
            DecryptAlg::RsaPkcs1v15 => "rsa-pkcs1v15",
        })
    }
}

/// Per-key policy set when the key is made or imported.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPolicy {
    /// Allow RSA PKCS#1 v1.5 decryption (Bleichenbacher-prone; Basic128Rsa15 only). Off by default.
    #[serde(default)]
    pub allow_pkcs1v15_decrypt: bool,
    /// Unix uids allowed to use the key through the daemon. Empty: any uid that can open the socket.
    #[serde(default)]
    pub allowed_uids: Vec<u32>,
    /// The key only opens sealed keys inside the vault (a device's transport key, the central's backup key): it
    /// makes no signatures, and the daemon refuses to return its decryptions (`decrypt` operation), because the
    /// decrypted content key would let the caller open a sealed private key outside the vault.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unwrap_only: bool,
}

/// What is known about a key, without its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// Backend-unique id (the container's random id, or CKA_ID on a token).
    #[serde(with = "serde_bytes")]
    pub id: Vec<u8>,
    /// Human label, unique per container or token.
    pub label: String,
    /// Kind and size.
    pub algorithm: KeyAlgorithm,
    /// The public key as DER SubjectPublicKeyInfo.
    #[serde(with = "serde_bytes")]
    pub spki_der: Vec<u8>,
    /// The key was generated inside the vault (false: imported).
    pub made_inside: bool,
    /// The key cannot be exported. Always true for our backends; reported from the token for PKCS#11.
    pub non_exportable: bool,
    /// The key's policy.
    #[serde(default)]
    pub policy: KeyPolicy,
}

impl KeyInfo {
    /// The id as lower-case hex, the form the CLI prints and accepts.
    pub fn id_hex(&self) -> String {
        hex::encode(&self.id)
    }

    /// SHA-256 over the SubjectPublicKeyInfo, a stable fingerprint across backends.
    pub fn fingerprint(&self) -> String {
        hex::encode(HashAlg::Sha256.digest(&self.spki_der))
    }
}

/// Which key to use. There is deliberately no "first key" selector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeySelector {
    /// By label.
    Label(String),
    /// By id.
    Id(#[serde(with = "serde_bytes")] Vec<u8>),
}

impl KeySelector {
    /// Whether `info` is the selected key.
    pub fn matches(&self, info: &KeyInfo) -> bool {
        match self {
            KeySelector::Label(l) => &info.label == l,
            KeySelector::Id(id) => &info.id == id,
        }
    }
}

impl fmt::Display for KeySelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySelector::Label(l) => write!(f, "label {l:?}"),
            KeySelector::Id(id) => write!(f, "id {}", hex::encode(id)),
        }
    }
}

/// A private key held by a vault backend: it can be used, never read.
///
/// Implementations must be cheap to share (`Arc<dyn VaultKey>`) and safe to call from many threads. Calls may block
/// (a socket round trip, a USB token): async callers run them on a blocking thread.
///
/// ```no_run
/// use certvault::{DaemonClient, KeySelector, KeyStore, SignAlg, VaultKey};
/// # fn main() -> Result<(), certvault::VaultError> {
/// let client = DaemonClient::connect("/run/certvault/vaultd.sock", None)?;
/// client.login(b"123456")?;
/// let key = client.key(&KeySelector::Label("opcua-server".into()))?;
/// let signature = key.sign(SignAlg::RsaPkcs1Sha256, b"to be signed")?;
/// assert_eq!(signature.len(), 256);
/// # Ok(()) }
/// ```
pub trait VaultKey: Send + Sync + fmt::Debug {
    /// Public facts about the key.
    fn info(&self) -> &KeyInfo;

    /// Signs `msg` (the whole message; the backend hashes). ECDSA signatures are raw r||s.
    fn sign(&self, alg: SignAlg, msg: &[u8]) -> Result<Vec<u8>>;

    /// Decrypts one RSA block. The plaintext is zeroized on drop.
    fn decrypt(&self, alg: DecryptAlg, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>>;

    /// Signs like [`VaultKey::sign`] but returns ECDSA signatures DER-encoded (X.509, TLS, CMS).
    fn sign_der(&self, alg: SignAlg, msg: &[u8]) -> Result<Vec<u8>> {
        let sig = self.sign(alg, msg)?;
        if alg.is_ecdsa() {
            crate::sig::ecdsa_raw_to_der(&sig)
        } else {
            Ok(sig)
        }
    }
}

/// Shared handle to a vault key.
pub type SharedKey = Arc<dyn VaultKey>;

/// Checks that `alg` suits `info` and the key's policy; every backend calls it before touching the key, so the
/// refusal reads the same whichever backend holds the key.
pub fn check_sign(info: &KeyInfo, alg: SignAlg) -> Result<()> {
    if info.policy.unwrap_only {
        return Err(VaultError::Unsupported {
            key: info.label.clone(),
            alg: alg.to_string(),
            why: "the key only opens sealed keys inside the vault (unwrap-only)".into(),
        });
    }
    if alg.fits(info.algorithm) {
        Ok(())
    } else {
        Err(VaultError::Unsupported {
            key: info.label.clone(),
            alg: alg.to_string(),
            why: format!("the key is {}", info.algorithm),
        })
    }
}

/// Checks that `alg` suits `info` and that `ciphertext` is one block of the key.
pub fn check_decrypt(info: &KeyInfo, alg: DecryptAlg, ciphertext: &[u8]) -> Result<()> {
    let KeyAlgorithm::Rsa { bits } = info.algorithm else {
        return Err(VaultError::Unsupported {
            key: info.label.clone(),
            alg: alg.to_string(),
            why: format!("the key is {}; only RSA keys decrypt", info.algorithm),
        });
    };
    if alg == DecryptAlg::RsaPkcs1v15 && !info.policy.allow_pkcs1v15_decrypt {
        return Err(VaultError::Unsupported {
            key: info.label.clone(),
            alg: alg.to_string(),
            why: "PKCS#1 v1.5 decryption is disabled for this key (enable it only for Basic128Rsa15)".into(),
        });
    }
    let block = (bits as usize).div_ceil(8);
    if ciphertext.len() != block {
        return Err(VaultError::InvalidInput(format!(
            "ciphertext is {} bytes; one block of this key is {block}",
            ciphertext.len()
        )));
    }
    Ok(())
}
