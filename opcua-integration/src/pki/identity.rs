//! The application's own certificate, checked at load against the vault key and the OPC UA certificate profile
//! (Part 6 §6.2.2), so a misconfiguration fails at start-up with a clear message instead of at the peer.

use std::time::SystemTime;

use certvault::{KeyAlgorithm, PublicKey};

use super::cert::Cert;
use super::policy::{PolicyLimits, Role};
use super::validate::{host_matches, leaf_usage_problem};

/// Why the own certificate does not fit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The certificate does not parse.
    #[error("own certificate: {0}")]
    Invalid(String),
    /// The vault key's public key does not parse.
    #[error("vault key: {0}")]
    VaultKey(String),
    /// The certificate was issued for another key.
    #[error("own certificate '{subject}' is not for the vault key (certificate: {cert_key}, vault: {vault_key})")]
    KeyMismatch {
        /// The certificate subject.
        subject: String,
        /// The certificate's key kind.
        cert_key: String,
        /// The vault key's kind.
        vault_key: String,
    },
    /// The subjectAltName lacks the ApplicationUri.
    #[error("own certificate lacks subjectAltName URI '{expected}' (ApplicationUri); it has {found:?}")]
    UriMissing {
        /// The configured ApplicationUri.
        expected: String,
        /// The certificate's URIs.
        found: Vec<String>,
    },
    /// A server certificate lacks a configured host name or address.
    #[error("own server certificate lacks host name '{host}' in subjectAltName; it has {names:?}")]
    HostMissing {
        /// The configured host.
        host: String,
        /// The certificate's DNS names and addresses.
        names: Vec<String>,
    },
    /// A server certificate without any DNS name or IP address.
    #[error("own server certificate has no DNS name or IP address in subjectAltName")]
    NoHostNames,
    /// keyUsage or extendedKeyUsage do not fit.
    #[error("own certificate usage: {0}")]
    Usage(String),
    /// Key length or signature algorithm outside the SecurityPolicy.
    #[error("own certificate does not fit the security policy: {0}")]
    Policy(String),
}

/// Checks the application's own certificate: its public key is the vault key's (`vault_spki`, DER
/// SubjectPublicKeyInfo), its subjectAltName URI is `application_uri`, a server's certificate names every host in
/// `hosts` (DNS names or IP addresses), keyUsage/extendedKeyUsage fit `role`, and key length and signature algorithm
/// fit `limits`. An expired or not yet valid certificate only logs a warning: peers will refuse it, but the operator
/// may be about to renew it and the application must still start.
pub fn check_own_certificate(
    cert_der: &[u8],
    vault_spki: &[u8],
    application_uri: &str,
    hosts: &[&str],
    role: Role,
    limits: &PolicyLimits,
) -> Result<Cert, IdentityError> {
    let cert = Cert::from_der(cert_der).map_err(IdentityError::Invalid)?;
    let vault = PublicKey::from_spki(vault_spki).map_err(|e| IdentityError::VaultKey(e.to_string()))?;
    let mine = PublicKey::from_spki(&cert.spki).ok();
    // Compare the key material, not the SPKI bytes: encoders differ in optional parameters.
    if mine.as_ref().map(|k| (k.algorithm(), k.raw_bytes())) != Some((vault.algorithm(), vault.raw_bytes())) {
        return Err(IdentityError::KeyMismatch {
            subject: cert.subject.clone(),
            cert_key: cert.key.map_or_else(|| "unsupported".to_string(), |k| k.to_string()),
            vault_key: vault.algorithm().to_string(),
        });
    }
    if !cert.uris.iter().any(|u| u == application_uri) {
        return Err(IdentityError::UriMissing { expected: application_uri.to_string(), found: cert.uris.clone() });
    }
    if role == Role::Server {
        if cert.dns_names.is_empty() && cert.ips.is_empty() {
            return Err(IdentityError::NoHostNames);
        }
        if let Some(host) = hosts.iter().find(|h| !host_matches(&cert, h)) {
            return Err(IdentityError::HostMissing { host: host.to_string(), names: cert.host_names() });
        }
    }
    if let Some(problem) = leaf_usage_problem(&cert, role) {
        return Err(IdentityError::Usage(problem));
    }
    match cert.key {
        Some(KeyAlgorithm::Rsa { bits }) if !limits.rsa_bits_allowed(bits) => {
            return Err(IdentityError::Policy(format!(
                "RSA key of {bits} bits, the policy allows {}..={}",
                limits.min_rsa_bits, limits.max_rsa_bits
            )))
        }
        Some(KeyAlgorithm::EcP256 | KeyAlgorithm::EcP384) if !limits.allow_ec_keys => {
            return Err(IdentityError::Policy("EC key under an RSA policy".into()))
        }
        _ => {}
    }
    if cert.sig_alg.hash() == Some(certvault::HashAlg::Sha1) && !limits.allow_sha1_signatures {
        return Err(IdentityError::Policy("SHA-1 certificate signature".into()));
    }
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    if now < cert.not_before || now > cert.not_after {
        tracing::warn!(
            subject = %cert.subject, not_before = %cert.not_before_text, not_after = %cert.not_after_text,
            "own certificate is not valid at this time; peers will refuse it"
        );
    }
    Ok(cert)
}
