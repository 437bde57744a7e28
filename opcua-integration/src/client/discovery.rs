//! Endpoint selection: which of a server's endpoints the client uses.
//!
//! GetEndpoints runs over a channel that is not yet authenticated (usually policy None), so its answer could have
//! been tampered with; the session later checks that CreateSession's `serverEndpoints` still offer the endpoint we
//! chose (see [`crate::client::session`]). The choice itself is sans-IO: [`EndpointFilter::select`] ranks the
//! endpoints the caller allows by securityLevel, then by mode (SignAndEncrypt first), then by policy strength.
//!
//! ```
//! use certvault_opcua::channel::policy::{SecurityMode, SecurityPolicy};
//! use certvault_opcua::client::{EndpointFilter, TRANSPORT_PROFILE_URI};
//! use opcua_types::{EndpointDescription, MessageSecurityMode};
//!
//! let endpoint = |policy: SecurityPolicy, mode: MessageSecurityMode, level: u8| EndpointDescription {
//!     endpoint_url: "opc.tcp://plc:4840/".into(),
//!     security_policy_uri: policy.uri().into(),
//!     security_mode: mode,
//!     security_level: level,
//!     transport_profile_uri: TRANSPORT_PROFILE_URI.into(),
//!     // Secured endpoints carry the server's certificate (placeholder bytes here).
//!     server_certificate: vec![0x30, 0x82].into(),
//!     ..Default::default()
//! };
//! let offered = [
//!     endpoint(SecurityPolicy::None, MessageSecurityMode::None, 0),
//!     endpoint(SecurityPolicy::Basic256Sha256, MessageSecurityMode::Sign, 3),
//!     endpoint(SecurityPolicy::Basic256Sha256, MessageSecurityMode::SignAndEncrypt, 3),
//! ];
//! let chosen = EndpointFilter::secure().select(&offered).unwrap();
//! assert_eq!(chosen.security_mode, MessageSecurityMode::SignAndEncrypt);
//! ```

use opcua_types::EndpointDescription;

use crate::channel::policy::{DeprecatedPolicies, SecurityMode, SecurityPolicy};
use crate::error::{Error, Result};

pub use crate::server::discovery::TRANSPORT_PROFILE_URI;

/// What the caller allows: policies and modes. The default ([`EndpointFilter::secure`]) allows the three current
/// RSA policies with Sign or SignAndEncrypt, never None.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointFilter {
    /// Allowed policies, strongest first: the order breaks ties between equally rated endpoints.
    pub policies: Vec<SecurityPolicy>,
    /// The weakest acceptable mode (`None` < `Sign` < `SignAndEncrypt`).
    pub min_mode: SecurityMode,
    /// Whether Basic128Rsa15 and Basic256 may be chosen at all.
    pub deprecated: DeprecatedPolicies,
}

impl Default for EndpointFilter {
    fn default() -> Self {
        EndpointFilter::secure()
    }
}

fn mode_rank(mode: SecurityMode) -> u8 {
    match mode {
        SecurityMode::None => 0,
        SecurityMode::Sign => 1,
        SecurityMode::SignAndEncrypt => 2,
    }
}

impl EndpointFilter {
    /// Aes256_Sha256_RsaPss, Basic256Sha256, Aes128_Sha256_RsaOaep; at least Sign.
    pub fn secure() -> Self {
        EndpointFilter {
            policies: vec![
                SecurityPolicy::Aes256Sha256RsaPss,
                SecurityPolicy::Basic256Sha256,
                SecurityPolicy::Aes128Sha256RsaOaep,
            ],
            min_mode: SecurityMode::Sign,
            deprecated: DeprecatedPolicies::Reject,
        }
    }

    /// One policy with at least `mode` (for None, `SecurityMode::None`). Naming a deprecated policy here is the
    /// opt-in for it.
    pub fn exactly(policy: SecurityPolicy, mode: SecurityMode) -> Self {
        EndpointFilter {
            policies: vec![policy],
            min_mode: mode,
            deprecated: if policy.is_deprecated() { DeprecatedPolicies::Allow } else { DeprecatedPolicies::Reject },
        }
    }

    fn allows(&self, endpoint: &EndpointDescription) -> Option<(SecurityPolicy, SecurityMode)> {
        if endpoint.transport_profile_uri.as_ref() != TRANSPORT_PROFILE_URI {
            return None;
        }
        if !endpoint.endpoint_url.as_ref().starts_with("opc.tcp://") {
            return None;
        }
        let policy = SecurityPolicy::from_uri(endpoint.security_policy_uri.as_ref(), self.deprecated).ok()?;
        let mode = SecurityMode::from_wire(endpoint.security_mode).ok()?;
        mode.check(policy).ok()?;
        if !self.policies.contains(&policy) || mode_rank(mode) < mode_rank(self.min_mode) {
            return None;
        }
        // A secured endpoint without a certificate cannot be used: there is nothing to encrypt to.
        if !policy.is_none() && endpoint.server_certificate.value.as_ref().is_none_or(|c| c.is_empty()) {
            return None;
        }
        Some((policy, mode))
    }

    /// The strongest allowed endpoint: highest securityLevel, then SignAndEncrypt over Sign, then the policy listed
    /// first in [`EndpointFilter::policies`]. [`Error::SecurityPolicyRejected`] when none is allowed.
    pub fn select(&self, endpoints: &[EndpointDescription]) -> Result<EndpointDescription> {
        endpoints
            .iter()
            .filter_map(|e| self.allows(e).map(|(p, m)| (e, p, m)))
            .max_by_key(|(e, policy, mode)| {
                let policy_rank = self.policies.len() - self.policies.iter().position(|p| p == policy).unwrap_or(0);
                (e.security_level, mode_rank(*mode), policy_rank)
            })
            .map(|(e, _, _)| e.clone())
            .ok_or_else(|| {
                Error::SecurityPolicyRejected(format!(
                    "none of the {} endpoints offers an allowed policy ({:?}) with mode {:?} or better over {}",
                    endpoints.len(),
                    self.policies.iter().map(|p| p.name()).collect::<Vec<_>>(),
                    self.min_mode,
                    TRANSPORT_PROFILE_URI,
                ))
            })
    }
}

/// The endpoint among `endpoints` with this policy and mode (and our transport profile).
pub(crate) fn find_endpoint(
    endpoints: &[EndpointDescription],
    policy: SecurityPolicy,
    mode: SecurityMode,
) -> Option<EndpointDescription> {
    endpoints
        .iter()
        .find(|e| {
            e.security_policy_uri.as_ref() == policy.uri()
                && e.security_mode == mode.to_wire()
                && e.transport_profile_uri.as_ref() == TRANSPORT_PROFILE_URI
        })
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opcua_types::{ByteString, MessageSecurityMode};

    fn endpoint(policy: SecurityPolicy, mode: MessageSecurityMode, level: u8) -> EndpointDescription {
        EndpointDescription {
            endpoint_url: "opc.tcp://h:4840/".into(),
            security_policy_uri: policy.uri().into(),
            security_mode: mode,
            security_level: level,
            transport_profile_uri: TRANSPORT_PROFILE_URI.into(),
            server_certificate: if policy.is_none() { ByteString::null() } else { ByteString::from(vec![1, 2, 3]) },
            ..Default::default()
        }
    }

    #[test]
    fn ranks_level_then_mode_then_policy() {
        use MessageSecurityMode as M;
        use SecurityPolicy as P;
        let offered = vec![
            endpoint(P::None, M::None, 0),
            endpoint(P::Basic256Sha256, M::Sign, 2),
            endpoint(P::Basic256Sha256, M::SignAndEncrypt, 2),
            endpoint(P::Aes128Sha256RsaOaep, M::SignAndEncrypt, 2),
            endpoint(P::Aes256Sha256RsaPss, M::Sign, 2),
        ];
        let chosen = EndpointFilter::secure().select(&offered).unwrap();
        assert_eq!(
            (chosen.security_policy_uri.as_ref(), chosen.security_mode),
            (P::Basic256Sha256.uri(), M::SignAndEncrypt)
        );

        // A higher securityLevel wins over mode and policy.
        let mut more = offered.clone();
        more.push(endpoint(P::Aes128Sha256RsaOaep, M::Sign, 9));
        let chosen = EndpointFilter::secure().select(&more).unwrap();
        assert_eq!(
            (chosen.security_policy_uri.as_ref(), chosen.security_mode),
            (P::Aes128Sha256RsaOaep.uri(), M::Sign)
        );

        // Equal level and mode: the caller's order of policies.
        let same = vec![endpoint(P::Aes128Sha256RsaOaep, M::Sign, 1), endpoint(P::Aes256Sha256RsaPss, M::Sign, 1)];
        assert_eq!(
            EndpointFilter::secure().select(&same).unwrap().security_policy_uri.as_ref(),
            P::Aes256Sha256RsaPss.uri()
        );
    }

    #[test]
    fn respects_the_callers_limits() {
        use MessageSecurityMode as M;
        use SecurityPolicy as P;
        let only_none = vec![endpoint(P::None, M::None, 0)];
        assert_eq!(
            EndpointFilter::secure().select(&only_none).unwrap_err().status_code(),
            opcua_types::StatusCode::BadSecurityPolicyRejected
        );
        assert!(EndpointFilter::exactly(P::None, SecurityMode::None).select(&only_none).is_ok());

        // Minimum mode SignAndEncrypt excludes Sign.
        let sign_only = vec![endpoint(P::Basic256Sha256, M::Sign, 5)];
        let strict = EndpointFilter { min_mode: SecurityMode::SignAndEncrypt, ..EndpointFilter::secure() };
        assert!(strict.select(&sign_only).is_err());

        // Deprecated policies only with opt-in, even when listed.
        let old = vec![endpoint(P::Basic256, M::SignAndEncrypt, 9)];
        let listed = EndpointFilter { policies: vec![P::Basic256], ..EndpointFilter::secure() };
        assert!(listed.select(&old).is_err());
        let opted = EndpointFilter { deprecated: DeprecatedPolicies::Allow, ..listed };
        assert!(opted.select(&old).is_ok());

        // Another transport profile (HTTPS, WebSockets) or a secured endpoint without a certificate is skipped.
        let mut wss = endpoint(P::Basic256Sha256, M::SignAndEncrypt, 9);
        wss.transport_profile_uri = "http://opcfoundation.org/UA-Profile/Transport/wss-uasc-uabinary".into();
        let mut no_cert = endpoint(P::Basic256Sha256, M::SignAndEncrypt, 8);
        no_cert.server_certificate = ByteString::null();
        let fallback = endpoint(P::Basic256Sha256, M::Sign, 1);
        let chosen = EndpointFilter::secure().select(&[wss, no_cert, fallback]).unwrap();
        assert_eq!(chosen.security_level, 1);

        // Unknown policies and Invalid modes are ignored, not errors.
        let mut odd = endpoint(P::Basic256Sha256, M::Invalid, 9);
        odd.security_policy_uri = "urn:unknown".into();
        assert!(EndpointFilter::secure().select(&[odd]).is_err());
    }

    #[test]
    fn find_by_policy_and_mode() {
        use MessageSecurityMode as M;
        use SecurityPolicy as P;
        let offered = vec![endpoint(P::None, M::None, 0), endpoint(P::Basic256Sha256, M::Sign, 1)];
        assert!(find_endpoint(&offered, P::Basic256Sha256, SecurityMode::Sign).is_some());
        assert!(find_endpoint(&offered, P::Basic256Sha256, SecurityMode::SignAndEncrypt).is_none());
    }
}
