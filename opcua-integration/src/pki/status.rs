//! Validation failures and the OPC UA status codes they map to (Part 4 §6.1.3, Table "Certificate validation steps").

use opcua_types::StatusCode;

/// The validation steps of Part 4 §6.1.3, in the order the specification runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CertCheck {
    /// The certificate is well-formed DER X.509 v3.
    Structure,
    /// Every issuer up to a self-signed root was found.
    BuildChain,
    /// Every signature in the chain verifies.
    Signature,
    /// Key lengths and signature algorithms fit the SecurityPolicy.
    SecurityPolicy,
    /// The leaf, or a CA of its chain, is in the trusted list.
    TrustList,
    /// Every certificate is within its validity period.
    ValidityPeriod,
    /// The server certificate names the host the client connected to.
    HostName,
    /// The certificate's subjectAltName URI is the peer's ApplicationUri.
    Uri,
    /// keyUsage, extendedKeyUsage and basicConstraints allow the use.
    Usage,
    /// A CRL was found for every CA in the chain.
    FindRevocationList,
    /// No certificate of the chain is revoked.
    Revocation,
}

/// Why a certificate (chain) was refused. Each variant is one failed check of Part 4 §6.1.3; `subject` fields name
/// the certificate that failed so logs point at the right file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// The certificate is not well-formed, or uses an algorithm this stack cannot check.
    #[error("invalid certificate: {reason}")]
    Invalid {
        /// What is wrong.
        reason: String,
    },
    /// An issuer of the chain was found neither in the received chain nor in issuer/ or trusted/.
    #[error("chain incomplete: issuer '{issuer}' of '{subject}' is not in the chain, issuer/certs or trusted/certs")]
    ChainIncomplete {
        /// The certificate whose issuer is missing.
        subject: String,
        /// The missing issuer's name.
        issuer: String,
    },
    /// A signature in the chain does not verify.
    #[error("signature of '{subject}' does not verify")]
    SignatureInvalid {
        /// The certificate with the bad signature.
        subject: String,
    },
    /// Key length or signature algorithm not allowed by the SecurityPolicy.
    #[error("certificate '{subject}' fails the security policy: {reason}")]
    PolicyCheckFailed {
        /// The offending certificate.
        subject: String,
        /// Key length or algorithm found and what the policy allows.
        reason: String,
    },
    /// Neither the certificate nor any CA of its chain is trusted.
    #[error("certificate '{subject}' is not trusted (move it from rejected/certs to trusted/certs to trust it)")]
    Untrusted {
        /// The leaf.
        subject: String,
    },
    /// The leaf is expired or not yet valid.
    #[error("certificate '{subject}' is not valid at this time (valid {not_before} to {not_after})")]
    TimeInvalid {
        /// The leaf.
        subject: String,
        /// Start of validity (RFC 2822 text).
        not_before: String,
        /// End of validity.
        not_after: String,
    },
    /// A CA of the chain is expired or not yet valid.
    #[error("issuer certificate '{subject}' is not valid at this time (valid {not_before} to {not_after})")]
    IssuerTimeInvalid {
        /// The CA.
        subject: String,
        /// Start of validity.
        not_before: String,
        /// End of validity.
        not_after: String,
    },
    /// The server certificate does not name the host the client connected to.
    #[error("host '{host}' is not among the certificate's names {names:?}")]
    HostNameInvalid {
        /// The host from the endpoint URL.
        host: String,
        /// DNS names and IP addresses of the certificate.
        names: Vec<String>,
    },
    /// The certificate's subjectAltName URIs do not include the ApplicationUri.
    #[error("ApplicationUri '{expected}' is not among the certificate's URIs {found:?}")]
    UriInvalid {
        /// The ApplicationUri of the peer's ApplicationDescription.
        expected: String,
        /// The certificate's subjectAltName URIs.
        found: Vec<String>,
    },
    /// keyUsage or extendedKeyUsage of the leaf do not allow the use.
    #[error("certificate '{subject}' may not be used here: {reason}")]
    UseNotAllowed {
        /// The leaf.
        subject: String,
        /// The missing usage.
        reason: String,
    },
    /// A CA of the chain may not issue certificates (basicConstraints, keyCertSign, path length).
    #[error("issuer certificate '{subject}' may not issue certificates: {reason}")]
    IssuerUseNotAllowed {
        /// The CA.
        subject: String,
        /// The missing usage.
        reason: String,
    },
    /// No CRL of the leaf's issuer was found in trusted/crl or issuer/crl.
    #[error("revocation status of '{subject}' unknown: no CRL from '{issuer}' in trusted/crl or issuer/crl")]
    RevocationUnknown {
        /// The leaf.
        subject: String,
        /// The CA whose CRL is missing.
        issuer: String,
    },
    /// No CRL was found for the issuer of a CA of the chain.
    #[error("revocation status of issuer '{subject}' unknown: no CRL from '{issuer}' in trusted/crl or issuer/crl")]
    IssuerRevocationUnknown {
        /// The CA whose status is unknown.
        subject: String,
        /// The CA whose CRL is missing.
        issuer: String,
    },
    /// The leaf is on its issuer's CRL.
    #[error("certificate '{subject}' (serial {serial}) is revoked")]
    Revoked {
        /// The leaf.
        subject: String,
        /// Its serial number in hex.
        serial: String,
    },
    /// A CA of the chain is on its issuer's CRL.
    #[error("issuer certificate '{subject}' (serial {serial}) is revoked")]
    IssuerRevoked {
        /// The revoked CA.
        subject: String,
        /// Its serial number in hex.
        serial: String,
    },
}

impl CertError {
    /// The check that failed.
    pub fn check(&self) -> CertCheck {
        match self {
            CertError::Invalid { .. } => CertCheck::Structure,
            CertError::ChainIncomplete { .. } => CertCheck::BuildChain,
            CertError::SignatureInvalid { .. } => CertCheck::Signature,
            CertError::PolicyCheckFailed { .. } => CertCheck::SecurityPolicy,
            CertError::Untrusted { .. } => CertCheck::TrustList,
            CertError::TimeInvalid { .. } | CertError::IssuerTimeInvalid { .. } => CertCheck::ValidityPeriod,
            CertError::HostNameInvalid { .. } => CertCheck::HostName,
            CertError::UriInvalid { .. } => CertCheck::Uri,
            CertError::UseNotAllowed { .. } | CertError::IssuerUseNotAllowed { .. } => CertCheck::Usage,
            CertError::RevocationUnknown { .. } | CertError::IssuerRevocationUnknown { .. } => {
                CertCheck::FindRevocationList
            }
            CertError::Revoked { .. } | CertError::IssuerRevoked { .. } => CertCheck::Revocation,
        }
    }

    /// The status code Part 4 §6.1.3 names for this failure (for logs, audit events and local callers).
    pub fn status_code(&self) -> StatusCode {
        match self {
            CertError::Invalid { .. } => StatusCode::BadCertificateInvalid,
            CertError::ChainIncomplete { .. } => StatusCode::BadCertificateChainIncomplete,
            CertError::SignatureInvalid { .. } => StatusCode::BadSecurityChecksFailed,
            CertError::PolicyCheckFailed { .. } => StatusCode::BadCertificatePolicyCheckFailed,
            CertError::Untrusted { .. } => StatusCode::BadCertificateUntrusted,
            CertError::TimeInvalid { .. } => StatusCode::BadCertificateTimeInvalid,
            CertError::IssuerTimeInvalid { .. } => StatusCode::BadCertificateIssuerTimeInvalid,
            CertError::HostNameInvalid { .. } => StatusCode::BadCertificateHostNameInvalid,
            CertError::UriInvalid { .. } => StatusCode::BadCertificateUriInvalid,
            CertError::UseNotAllowed { .. } => StatusCode::BadCertificateUseNotAllowed,
            CertError::IssuerUseNotAllowed { .. } => StatusCode::BadCertificateIssuerUseNotAllowed,
            CertError::RevocationUnknown { .. } => StatusCode::BadCertificateRevocationUnknown,
            CertError::IssuerRevocationUnknown { .. } => StatusCode::BadCertificateIssuerRevocationUnknown,
            CertError::Revoked { .. } => StatusCode::BadCertificateRevoked,
            CertError::IssuerRevoked { .. } => StatusCode::BadCertificateIssuerRevoked,
        }
    }

    /// The status code to put on the wire when a server refuses a client's certificate in OpenSecureChannel.
    ///
    /// Part 6 §6.7.6 has the receiver "check that the Certificate is trusted first and return
    /// Bad_SecurityChecksFailed on error", so a peer cannot probe the trust list: structure, chain, signature, policy
    /// and trust failures all answer Bad_SecurityChecksFailed. The remaining codes are listed among the
    /// OpenSecureChannel results (Part 4 §5.5.2.3) and were confirmed as safe to return (OPC UA Mantis 8938), since a
    /// client can act on them: those pass through.
    pub fn wire_status_code(&self) -> StatusCode {
        match self.check() {
            CertCheck::Structure
            | CertCheck::BuildChain
            | CertCheck::Signature
            | CertCheck::SecurityPolicy
            | CertCheck::TrustList => StatusCode::BadSecurityChecksFailed,
            _ => self.status_code(),
        }
    }

    /// True when the specification's operator workflow wants the peer certificate copied to rejected/certs: the
    /// failures an administrator fixes by trusting the certificate or adding its issuer (untrusted, chain incomplete).
    /// Broken, revoked or mismatching certificates are not offered for trust.
    pub fn should_reject(&self) -> bool {
        matches!(self, CertError::Untrusted { .. } | CertError::ChainIncomplete { .. })
    }

    /// True when [`super::ValidationOptions`] may suppress this failure (Part 4 §6.1.3 marks the others as never
    /// suppressible: structure, chain, signature, trust and revoked).
    pub fn is_suppressible(&self) -> bool {
        !matches!(
            self.check(),
            CertCheck::Structure
                | CertCheck::BuildChain
                | CertCheck::Signature
                | CertCheck::TrustList
                | CertCheck::Revocation
        )
    }
}
