//! The PKI store as the secure channel's trust decision: [`StoreValidator`] implements the channel's
//! [`CertificateValidator`] hook with the policy's key-length and algorithm limits.
//!
//! The ApplicationUri and host-name checks belong to CreateSession, where the URI and the endpoint are known; the
//! channel checks trust, chain, validity, revocation, usage and the policy.

use std::sync::Arc;

use super::{split_chain, PkiStore, PolicyLimits, Role, ValidationContext, ValidationOptions};
use crate::channel::asymmetric::PeerCertificate;
use crate::channel::policy::SecurityPolicy;
use crate::channel::secure_channel::CertificateValidator;
use crate::error::{Error, Result};

/// Validates peers of secure channels against a [`PkiStore`].
#[derive(Debug, Clone)]
pub struct StoreValidator {
    store: Arc<PkiStore>,
    peer_role: Role,
    options: ValidationOptions,
}

impl StoreValidator {
    /// A validator for peers in `peer_role` (a server validates [`Role::Client`]s).
    pub fn new(store: Arc<PkiStore>, peer_role: Role, options: ValidationOptions) -> Self {
        StoreValidator { store, peer_role, options }
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
                tracing::warn!(policy = policy.name(), "peer certificate refused: {e}");
                Err(Error::CertificateRejected { status: e.wire_status_code(), reason: e.to_string() })
            }
        }
    }
}
