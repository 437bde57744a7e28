//! Security policies (Part 7 profiles, Part 6 §6.1) and security modes: the exact URIs and, per policy, every
//! algorithm and length the channel needs. The deprecated Basic128Rsa15 and Basic256 exist but are refused unless
//! the caller opts in with [`DeprecatedPolicies::Allow`].

use certvault::{DecryptAlg, SignAlg};
use opcua_types::MessageSecurityMode;

use crate::error::{Error, Result};

/// Prefix every standard policy URI shares.
const URI_PREFIX: &str = "http://opcfoundation.org/UA/SecurityPolicy#";

/// The RSA security policies and None.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecurityPolicy {
    /// No security: for tests only; disabled by default at endpoints.
    None,
    /// Deprecated since 1.04 (SHA-1, PKCS#1 v1.5 encryption). Needs opt-in.
    Basic128Rsa15,
    /// Deprecated since 1.04 (SHA-1). Needs opt-in.
    Basic256,
    /// RSA-PKCS#1-SHA256 signatures, RSA-OAEP-SHA1 encryption, AES-256-CBC, HMAC-SHA256.
    Basic256Sha256,
    /// As Basic256Sha256 with AES-128-CBC.
    Aes128Sha256RsaOaep,
    /// RSA-PSS-SHA256 signatures, RSA-OAEP-SHA256 encryption, AES-256-CBC, HMAC-SHA256.
    Aes256Sha256RsaPss,
}

/// Whether the deprecated SHA-1 policies may be used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeprecatedPolicies {
    /// Refuse Basic128Rsa15 and Basic256 (the default).
    #[default]
    Reject,
    /// Accept them: only for talking to old devices that cannot do better.
    Allow,
}

/// The HMAC of symmetric signatures (and of the key-derivation PRF).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymmetricSignature {
    /// HMAC-SHA1, 20-byte MACs; P_SHA1 key derivation.
    HmacSha1,
    /// HMAC-SHA256, 32-byte MACs; P_SHA256 key derivation.
    HmacSha256,
}

impl SymmetricSignature {
    /// MAC length in bytes.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(self) -> usize {
        match self {
            SymmetricSignature::HmacSha1 => 20,
            SymmetricSignature::HmacSha256 => 32,
        }
    }

    /// The aws-lc-rs HMAC algorithm.
    pub(crate) fn hmac(self) -> aws_lc_rs::hmac::Algorithm {
        match self {
            SymmetricSignature::HmacSha1 => aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            SymmetricSignature::HmacSha256 => aws_lc_rs::hmac::HMAC_SHA256,
        }
    }
}

impl SecurityPolicy {
    /// Every policy, for tests and listings.
    pub const ALL: [SecurityPolicy; 6] = [
        SecurityPolicy::None,
        SecurityPolicy::Basic128Rsa15,
        SecurityPolicy::Basic256,
        SecurityPolicy::Basic256Sha256,
        SecurityPolicy::Aes128Sha256RsaOaep,
        SecurityPolicy::Aes256Sha256RsaPss,
    ];

    /// The policy URI, exactly as Part 7 spells it.
    pub fn uri(self) -> &'static str {
        match self {
            SecurityPolicy::None => "http://opcfoundation.org/UA/SecurityPolicy#None",
            SecurityPolicy::Basic128Rsa15 => "http://opcfoundation.org/UA/SecurityPolicy#Basic128Rsa15",
            SecurityPolicy::Basic256 => "http://opcfoundation.org/UA/SecurityPolicy#Basic256",
            SecurityPolicy::Basic256Sha256 => "http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256",
            SecurityPolicy::Aes128Sha256RsaOaep => "http://opcfoundation.org/UA/SecurityPolicy#Aes128_Sha256_RsaOaep",
            SecurityPolicy::Aes256Sha256RsaPss => "http://opcfoundation.org/UA/SecurityPolicy#Aes256_Sha256_RsaPss",
        }
    }

    /// The short name after the `#`.
    pub fn name(self) -> &'static str {
        self.uri().strip_prefix(URI_PREFIX).unwrap_or(self.uri())
    }

    /// Parses a policy URI. Unknown URIs, and the deprecated policies without opt-in, are
    /// `BadSecurityPolicyRejected`.
    pub fn from_uri(uri: &str, deprecated: DeprecatedPolicies) -> Result<Self> {
        let policy = SecurityPolicy::ALL
            .into_iter()
            .find(|p| p.uri() == uri)
            .ok_or_else(|| Error::SecurityPolicyRejected(format!("unknown security policy {uri:?}")))?;
        if policy.is_deprecated() && deprecated == DeprecatedPolicies::Reject {
            return Err(Error::SecurityPolicyRejected(format!(
                "{} is deprecated and not enabled; enable deprecated policies explicitly to use it",
                policy.name()
            )));
        }
        Ok(policy)
    }

    /// True for Basic128Rsa15 and Basic256.
    pub fn is_deprecated(self) -> bool {
        matches!(self, SecurityPolicy::Basic128Rsa15 | SecurityPolicy::Basic256)
    }

    /// True for None.
    pub fn is_none(self) -> bool {
        self == SecurityPolicy::None
    }

    /// AsymmetricSignatureAlgorithm, done by the vault. `None` for policy None.
    pub fn asymmetric_signature(self) -> Option<SignAlg> {
        match self {
            SecurityPolicy::None => None,
            SecurityPolicy::Basic128Rsa15 | SecurityPolicy::Basic256 => Some(SignAlg::RsaPkcs1Sha1),
            SecurityPolicy::Basic256Sha256 | SecurityPolicy::Aes128Sha256RsaOaep => Some(SignAlg::RsaPkcs1Sha256),
            SecurityPolicy::Aes256Sha256RsaPss => Some(SignAlg::RsaPssSha256),
        }
    }

    /// The URI of the asymmetric signature algorithm, as SignatureData.algorithm carries it.
    pub fn asymmetric_signature_uri(self) -> Option<&'static str> {
        Some(match self.asymmetric_signature()? {
            SignAlg::RsaPkcs1Sha1 => "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
            SignAlg::RsaPssSha256 => "http://opcfoundation.org/UA/security/rsa-pss-sha2-256",
            _ => "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
        })
    }

    /// AsymmetricEncryptionAlgorithm: the vault decrypts, the peer's public key encrypts. `None` for policy None.
    pub fn asymmetric_encryption(self) -> Option<DecryptAlg> {
        match self {
            SecurityPolicy::None => None,
            SecurityPolicy::Basic128Rsa15 => Some(DecryptAlg::RsaPkcs1v15),
            SecurityPolicy::Basic256 | SecurityPolicy::Basic256Sha256 | SecurityPolicy::Aes128Sha256RsaOaep => {
                Some(DecryptAlg::RsaOaepSha1)
            }
            SecurityPolicy::Aes256Sha256RsaPss => Some(DecryptAlg::RsaOaepSha256),
        }
    }

    /// The URI of the asymmetric encryption algorithm (UserTokenPolicy encryption, EncryptedSecret).
    pub fn asymmetric_encryption_uri(self) -> Option<&'static str> {
        Some(match self.asymmetric_encryption()? {
            DecryptAlg::RsaPkcs1v15 => "http://www.w3.org/2001/04/xmlenc#rsa-1_5",
            DecryptAlg::RsaOaepSha1 => "http://www.w3.org/2001/04/xmlenc#rsa-oaep",
            DecryptAlg::RsaOaepSha256 => "http://opcfoundation.org/UA/security/rsa-oaep-sha2-256",
        })
    }

    /// SymmetricSignatureAlgorithm (also fixes the PRF: P_SHA1 or P_SHA256). `None` for policy None.
    pub fn symmetric_signature(self) -> Option<SymmetricSignature> {
        match self {
            SecurityPolicy::None => None,
            SecurityPolicy::Basic128Rsa15 | SecurityPolicy::Basic256 => Some(SymmetricSignature::HmacSha1),
            _ => Some(SymmetricSignature::HmacSha256),
        }
    }

    /// Symmetric MAC length in bytes (0 for None).
    pub fn symmetric_signature_len(self) -> usize {
        self.symmetric_signature().map_or(0, SymmetricSignature::len)
    }

    /// DerivedSignatureKeyLength in bytes.
    pub fn derived_signing_key_len(self) -> usize {
        match self {
            SecurityPolicy::None => 0,
            SecurityPolicy::Basic128Rsa15 => 16,
            SecurityPolicy::Basic256 => 24,
            _ => 32,
        }
    }

    /// AES key length in bytes (16 for AES-128, 32 for AES-256; 0 for None).
    pub fn encrypting_key_len(self) -> usize {
        match self {
            SecurityPolicy::None => 0,
            SecurityPolicy::Basic128Rsa15 | SecurityPolicy::Aes128Sha256RsaOaep => 16,
            _ => 32,
        }
    }

    /// The AES block (and IV) length.
    pub fn encrypting_block_len(self) -> usize {
        if self.is_none() {
            0
        } else {
            16
        }
    }

    /// SecureChannelNonceLength: the length of the nonces in OpenSecureChannel.
    pub fn nonce_len(self) -> usize {
        match self {
            SecurityPolicy::None => 0,
            SecurityPolicy::Basic128Rsa15 => 16,
            _ => 32,
        }
    }

    /// Smallest RSA key (bits) the policy allows, for every certificate in the chain.
    pub fn min_asymmetric_key_bits(self) -> u32 {
        match self {
            SecurityPolicy::None => 0,
            SecurityPolicy::Basic128Rsa15 | SecurityPolicy::Basic256 => 1024,
            _ => 2048,
        }
    }

    /// Largest RSA key (bits) the policy allows.
    pub fn max_asymmetric_key_bits(self) -> u32 {
        match self {
            SecurityPolicy::None => 0,
            SecurityPolicy::Basic128Rsa15 | SecurityPolicy::Basic256 => 2048,
            _ => 4096,
        }
    }

    /// Checks an RSA key length against the policy: `BadCertificatePolicyCheckFailed` outside the range.
    pub fn check_key_bits(self, bits: u32) -> Result<()> {
        if self.is_none() {
            return Ok(());
        }
        let (min, max) = (self.min_asymmetric_key_bits(), self.max_asymmetric_key_bits());
        if bits < min || bits > max {
            return Err(Error::CertificatePolicyCheckFailed(format!(
                "a {bits}-bit RSA key is outside {min}..={max} bits required by {}",
                self.name()
            )));
        }
        Ok(())
    }
}

impl std::fmt::Display for SecurityPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// MessageSecurityMode without the `Invalid` value the wire type carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecurityMode {
    /// No signatures, no encryption (only with policy None).
    None,
    /// MSG/CLO chunks are signed; OPN is still signed and encrypted.
    Sign,
    /// MSG/CLO chunks are signed and encrypted.
    SignAndEncrypt,
}

impl SecurityMode {
    /// Converts from the wire enum; `Invalid` is `BadSecurityModeRejected`.
    pub fn from_wire(mode: MessageSecurityMode) -> Result<Self> {
        match mode {
            MessageSecurityMode::None => Ok(SecurityMode::None),
            MessageSecurityMode::Sign => Ok(SecurityMode::Sign),
            MessageSecurityMode::SignAndEncrypt => Ok(SecurityMode::SignAndEncrypt),
            MessageSecurityMode::Invalid => Err(Error::SecurityModeRejected("Invalid".into())),
        }
    }

    /// The wire enum.
    pub fn to_wire(self) -> MessageSecurityMode {
        match self {
            SecurityMode::None => MessageSecurityMode::None,
            SecurityMode::Sign => MessageSecurityMode::Sign,
            SecurityMode::SignAndEncrypt => MessageSecurityMode::SignAndEncrypt,
        }
    }

    /// Checks that the mode fits the policy: None goes with None only.
    pub fn check(self, policy: SecurityPolicy) -> Result<()> {
        if (self == SecurityMode::None) != policy.is_none() {
            return Err(Error::SecurityModeRejected(format!("mode {self:?} does not fit policy {policy}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opcua_types::StatusCode;

    #[test]
    fn uris_are_exact_and_round_trip() {
        for p in SecurityPolicy::ALL {
            assert_eq!(SecurityPolicy::from_uri(p.uri(), DeprecatedPolicies::Allow).unwrap(), p);
            assert!(p.uri().starts_with(URI_PREFIX));
        }
        assert_eq!(SecurityPolicy::Aes128Sha256RsaOaep.name(), "Aes128_Sha256_RsaOaep");
        assert_eq!(SecurityPolicy::Aes256Sha256RsaPss.name(), "Aes256_Sha256_RsaPss");
        assert_eq!(
            SecurityPolicy::Aes256Sha256RsaPss.asymmetric_signature_uri(),
            Some("http://opcfoundation.org/UA/security/rsa-pss-sha2-256")
        );
    }

    #[test]
    fn unknown_and_unopted_deprecated_policies_are_rejected() {
        let e = SecurityPolicy::from_uri("http://opcfoundation.org/UA/SecurityPolicy#Basic512", Default::default())
            .unwrap_err();
        assert_eq!(e.status_code(), StatusCode::BadSecurityPolicyRejected);
        for p in [SecurityPolicy::Basic128Rsa15, SecurityPolicy::Basic256] {
            let e = SecurityPolicy::from_uri(p.uri(), DeprecatedPolicies::Reject).unwrap_err();
            assert_eq!(e.status_code(), StatusCode::BadSecurityPolicyRejected);
        }
        // Case matters: URIs compare exactly.
        assert!(
            SecurityPolicy::from_uri(&SecurityPolicy::Basic256Sha256.uri().to_lowercase(), Default::default()).is_err()
        );
    }

    #[test]
    fn parameters_match_part_7() {
        use SecurityPolicy::*;
        // (policy, sig key, enc key, MAC, nonce)
        for (p, sk, ek, mac, nonce) in [
            (Basic128Rsa15, 16, 16, 20, 16),
            (Basic256, 24, 32, 20, 32),
            (Basic256Sha256, 32, 32, 32, 32),
            (Aes128Sha256RsaOaep, 32, 16, 32, 32),
            (Aes256Sha256RsaPss, 32, 32, 32, 32),
        ] {
            assert_eq!(p.derived_signing_key_len(), sk, "{p}");
            assert_eq!(p.encrypting_key_len(), ek, "{p}");
            assert_eq!(p.symmetric_signature_len(), mac, "{p}");
            assert_eq!(p.nonce_len(), nonce, "{p}");
            assert_eq!(p.encrypting_block_len(), 16);
        }
        assert_eq!(Aes256Sha256RsaPss.asymmetric_encryption(), Some(DecryptAlg::RsaOaepSha256));
        assert_eq!(Basic256Sha256.asymmetric_encryption(), Some(DecryptAlg::RsaOaepSha1));
        assert_eq!(Basic128Rsa15.asymmetric_encryption(), Some(DecryptAlg::RsaPkcs1v15));
        assert_eq!(Aes256Sha256RsaPss.asymmetric_signature(), Some(SignAlg::RsaPssSha256));
        assert_eq!(Aes128Sha256RsaOaep.asymmetric_signature(), Some(SignAlg::RsaPkcs1Sha256));
        assert_eq!(None.asymmetric_signature(), Option::None);
    }

    #[test]
    fn key_lengths_are_checked_per_policy() {
        assert!(SecurityPolicy::Basic256Sha256.check_key_bits(2048).is_ok());
        assert!(SecurityPolicy::Basic256Sha256.check_key_bits(4096).is_ok());
        let e = SecurityPolicy::Basic256Sha256.check_key_bits(1024).unwrap_err();
        assert_eq!(e.status_code(), StatusCode::BadCertificatePolicyCheckFailed);
        assert!(SecurityPolicy::Basic256.check_key_bits(4096).is_err());
        assert!(SecurityPolicy::Aes256Sha256RsaPss.check_key_bits(8192).is_err());
    }

    #[test]
    fn modes_fit_policies() {
        assert!(SecurityMode::None.check(SecurityPolicy::None).is_ok());
        assert!(SecurityMode::Sign.check(SecurityPolicy::None).is_err());
        assert!(SecurityMode::None.check(SecurityPolicy::Basic256Sha256).is_err());
        assert!(SecurityMode::SignAndEncrypt.check(SecurityPolicy::Basic256Sha256).is_ok());
        assert!(SecurityMode::from_wire(MessageSecurityMode::Invalid).is_err());
        for m in [SecurityMode::None, SecurityMode::Sign, SecurityMode::SignAndEncrypt] {
            assert_eq!(SecurityMode::from_wire(m.to_wire()).unwrap(), m);
        }
    }
}
