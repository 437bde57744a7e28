//! The PKI store as the secure channel's trust decision: [`StoreValidator`] implements the channel's
//! [`CertificateValidator`] hook with the policy's key-length and algorithm limits, and [`check_peer_certificate`]
//! is the client's check of a server certificate before it opens a channel.
//!
//! A server's channel checks trust, chain, validity, revocation, usage and the policy; the client's ApplicationUri
//! belongs to CreateSession, where it is known. A client knows the server's ApplicationUri and the host it connects
//! to before the channel, so it checks those too.

use std::sync::Arc;

use opcua_types::StatusCode;
use tokio::sync::broadcast;

use super::{
    split_chain, CertError, PkiStore, PolicyLimits, Role, ValidatedCert, ValidationContext, ValidationOptions,
};
use crate::channel::asymmetric::PeerCertificate;
use crate::channel::policy::SecurityPolicy;
use crate::channel::secure_channel::CertificateValidator;
use crate::error::{Error, Result};

/// How many refusals a slow subscriber may fall behind before it misses some.
const REFUSAL_BACKLOG: usize = 64;

/// A peer certificate a [`StoreValidator`] refused: what the operator (or an audit log) needs, including the
/// specific status code that the peer does not get to see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateRefusal {
    /// The policy of the channel.
    pub policy: SecurityPolicy,
    /// The failed check's own status code (BadCertificateUntrusted, BadCertificateRevoked, ...).
    pub status: StatusCode,
    /// What the peer receives in the Error message (Part 6 §6.7.6 hides trust-list details).
    pub wire_status: StatusCode,
    /// The reason, for logs.
    pub reason: String,
    /// True when the certificate was copied to rejected/certs.
    pub copied_to_rejected: bool,
}

/// Validates peers of secure channels against a [`PkiStore`].
#[derive(Debug, Clone)]
pub struct StoreValidator {
    store: Arc<PkiStore>,
    peer_role: Role,
    options: ValidationOptions,
    refusals: broadcast::Sender<CertificateRefusal>,
}

impl StoreValidator {
    /// A validator for peers in `peer_role` (a server validates [`Role::Client`]s).
    pub fn new(store: Arc<PkiStore>, peer_role: Role, options: ValidationOptions) -> Self {
        let (refusals, _) = broadcast::channel(REFUSAL_BACKLOG);
        StoreValidator { store, peer_role, options, refusals }
    }

    /// The store this validator reads.
    pub fn store(&self) -> &Arc<PkiStore> {
        &self.store
    }

    /// Every refusal from now on (audit, operator UI, tests). Refusals nobody listens to are dropped.
    pub fn subscribe(&self) -> broadcast::Receiver<CertificateRefusal> {
        self.refusals.subscribe()
    }
}

/// The certificate limits a security policy imposes on every certificate of a peer's chain.
pub fn limits_for(policy: SecurityPolicy) -> PolicyLimits {
    PolicyLimits {
        min_rsa_bits: policy.min_asymmetric_key_bits(),
        max_rsa_bits: policy.max_asymmetric_key_bits(),
        allow_sha1_signatures: policy.is_deprecated(),
        allow_ec_keys: false,
    }
}

impl CertificateValidator for StoreValidator {
    fn validate(&self, peer: &PeerCertificate, policy: SecurityPolicy) -> Result<()> {
        let chain = split_chain(peer.certificate_chain()).map_err(Error::CertificateInvalid)?;
        let ctx = ValidationContext::new(self.peer_role, limits_for(policy)).with_options(self.options);
        match self.store.validate(&chain, &ctx) {
            Ok(_) => Ok(()),
            Err(e) => {
                // The log and the refusal carry the specific code; the peer only gets the wire code.
                tracing::warn!(policy = policy.name(), status = %e.status_code(), "peer certificate refused: {e}");
                let _ = self.refusals.send(CertificateRefusal {
                    policy,
                    status: e.status_code(),
                    wire_status: e.wire_status_code(),
                    reason: e.to_string(),
                    copied_to_rejected: e.should_reject(),
                });
                Err(Error::CertificateRejected {
                    status: e.wire_status_code(),
                    reason: format!("{}: {e}", e.status_code()),
                })
            }
        }
    }
}

/// A client's check of a server certificate (DER, possibly a chain) before OpenSecureChannel: Part 4 §6.1.3
/// against `store` for a [`Role::Server`] under `policy`, plus the host the client connects to and, when known,
/// the server's ApplicationUri. The error carries the failed check's own status code (BadCertificateUntrusted,
/// BadCertificateHostNameInvalid, BadCertificateUriInvalid, ...): nothing goes on the wire, the caller refuses.
pub fn check_peer_certificate(
    store: &PkiStore,
    certificate: &[u8],
    policy: SecurityPolicy,
    host: &str,
    application_uri: Option<&str>,
    options: ValidationOptions,
) -> Result<ValidatedCert> {
    let chain = split_chain(certificate).map_err(Error::CertificateInvalid)?;
    let mut ctx = ValidationContext::new(Role::Server, limits_for(policy)).with_options(options).with_host(host);
    if let Some(uri) = application_uri {
        ctx = ctx.with_application_uri(uri);
    }
    store.validate(&chain, &ctx).map_err(|e: CertError| {
        tracing::warn!(policy = policy.name(), status = %e.status_code(), "server certificate refused: {e}");
        Error::CertificateRejected { status: e.status_code(), reason: e.to_string() }
    })
}
