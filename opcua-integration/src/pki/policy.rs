//! What a SecurityPolicy demands of certificates, and which role a certificate plays.

/// Certificate constraints of a SecurityPolicy (Part 7 profiles; research notes §1.1). They apply to every
/// certificate of a chain, issuers included. The channel code fills this from its own policy table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyLimits {
    /// Smallest RSA modulus allowed, in bits.
    pub min_rsa_bits: u32,
    /// Largest RSA modulus allowed, in bits. 0 refuses RSA keys (ECC policies).
    pub max_rsa_bits: u32,
    /// SHA-1 certificate signatures allowed (only the deprecated Basic128Rsa15 and Basic256).
    pub allow_sha1_signatures: bool,
    /// EC P-256/P-384 keys allowed (ECC policies).
    pub allow_ec_keys: bool,
}

impl PolicyLimits {
    /// Basic256Sha256, Aes128_Sha256_RsaOaep and Aes256_Sha256_RsaPss: RSA 2048..=4096, SHA-2 signatures.
    pub const RSA_SHA256: PolicyLimits =
        PolicyLimits { min_rsa_bits: 2048, max_rsa_bits: 4096, allow_sha1_signatures: false, allow_ec_keys: false };

    /// The deprecated Basic128Rsa15 and Basic256: RSA 1024..=2048, SHA-1 signatures allowed.
    pub const RSA_LEGACY: PolicyLimits =
        PolicyLimits { min_rsa_bits: 1024, max_rsa_bits: 2048, allow_sha1_signatures: true, allow_ec_keys: false };

    /// ECC_nistP256 and ECC_nistP384: EC keys only.
    pub const ECC_NIST: PolicyLimits =
        PolicyLimits { min_rsa_bits: 0, max_rsa_bits: 0, allow_sha1_signatures: false, allow_ec_keys: true };

    /// Checks the RSA key length `bits`.
    pub fn rsa_bits_allowed(&self, bits: u32) -> bool {
        self.max_rsa_bits != 0 && (self.min_rsa_bits..=self.max_rsa_bits).contains(&bits)
    }
}

impl Default for PolicyLimits {
    /// The limits of the recommended policies ([`PolicyLimits::RSA_SHA256`]).
    fn default() -> Self {
        PolicyLimits::RSA_SHA256
    }
}

/// The role of the application a certificate belongs to, which decides the extendedKeyUsage it needs and whether
/// host names are required.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// An OPC UA client (id-kp-clientAuth).
    Client,
    /// An OPC UA server (id-kp-serverAuth; DNS or IP names).
    Server,
    /// Unknown or both (no extendedKeyUsage requirement).
    #[default]
    Any,
}
