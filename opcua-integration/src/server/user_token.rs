//! User identity tokens (Part 4 §7.41): the token policies a server offers, and the check of the token an
//! ActivateSession carries.
//!
//! - Anonymous: the users file's anonymous role.
//! - UserName: the password arrives in the legacy encrypted secret format; it is decrypted in the vault (one RSA
//!   block per call), bound to the session's last server nonce, then checked against an Argon2id hash.
//! - X509: the user certificate is validated against the user trust list (its own PKI store, not the application
//!   trust list), and the userTokenSignature over serverCertificate || serverNonce must verify with it.
//!
//! The checks are slow on purpose (Argon2id) or call the vault, so [`Authenticator::authenticate`] runs on a
//! blocking thread.

use std::sync::Arc;

use opcua_types::{
    AnonymousIdentityToken, ExtensionObject, SignatureData, StatusCode, UAString, UserNameIdentityToken,
    UserTokenPolicy, UserTokenType, X509IdentityToken,
};

use super::access::Principal;
use super::session::Activation;
use super::users::UserDatabase;
use crate::channel::asymmetric::{LocalIdentity, PeerCertificate};
use crate::channel::policy::{DeprecatedPolicies, SecurityPolicy};
use crate::pki::{limits_for, split_chain, PkiStore, Role, ValidationContext};

/// The policy id of anonymous tokens.
pub const ANONYMOUS_POLICY_ID: &str = "anonymous";
/// The policy id of user name tokens.
pub const USERNAME_POLICY_ID: &str = "username";
/// The policy id of X.509 user certificate tokens.
pub const X509_POLICY_ID: &str = "x509";

/// Which kinds of user token a server accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserTokenKinds {
    /// Anonymous sessions.
    pub anonymous: bool,
    /// User name and password.
    pub username: bool,
    /// X.509 user certificates.
    pub x509: bool,
}

impl Default for UserTokenKinds {
    /// Anonymous only: user names need a users file, certificates a user trust list.
    fn default() -> Self {
        UserTokenKinds { anonymous: true, username: false, x509: false }
    }
}

/// The policy that protects user secrets on an endpoint: the channel's, or Basic256Sha256 on a None channel so a
/// password never travels in the clear.
pub fn token_security_policy(endpoint_policy: SecurityPolicy) -> SecurityPolicy {
    if endpoint_policy.is_none() {
        SecurityPolicy::Basic256Sha256
    } else {
        endpoint_policy
    }
}

/// The UserTokenPolicies of an endpoint with `endpoint_policy`. Tokens that need encryption or a signature are
/// offered on a None endpoint only when the server has a certificate.
pub fn policies(kinds: UserTokenKinds, endpoint_policy: SecurityPolicy, has_certificate: bool) -> Vec<UserTokenPolicy> {
    // Always named, never empty: an empty URI means "the channel's policy" to the specification, but some clients
    // (async-opcua 0.19) read it as None and send no userTokenSignature at all.
    let secured_uri = |_: ()| -> UAString { token_security_policy(endpoint_policy).uri().into() };
    let policy = |id: &str, token_type, security_policy_uri| UserTokenPolicy {
        policy_id: id.into(),
        token_type,
        issued_token_type: UAString::null(),
        issuer_endpoint_url: UAString::null(),
        security_policy_uri,
    };
    let mut out = Vec::new();
    if kinds.anonymous {
        out.push(policy(ANONYMOUS_POLICY_ID, UserTokenType::Anonymous, UAString::null()));
    }
    let secrets_possible = has_certificate || !endpoint_policy.is_none();
    if kinds.username && secrets_possible {
        out.push(policy(USERNAME_POLICY_ID, UserTokenType::UserName, secured_uri(())));
    }
    if kinds.x509 && secrets_possible {
        out.push(policy(X509_POLICY_ID, UserTokenType::Certificate, secured_uri(())));
    }
    out
}

/// Checks user identity tokens.
#[derive(Clone, Debug)]
pub struct Authenticator {
    /// The accepted kinds.
    pub kinds: UserTokenKinds,
    /// Users and certificate roles.
    pub users: Arc<UserDatabase>,
    /// The user certificate trust list (X.509 tokens are refused without one).
    pub user_pki: Option<Arc<PkiStore>>,
    /// Our certificate and vault key: the key decrypts passwords, the certificate is what user signatures cover.
    pub identity: Option<LocalIdentity>,
}

impl Authenticator {
    /// The principal `token` proves, or the status ActivateSession answers with. A null token is anonymous.
    pub fn authenticate(
        &self,
        token: &ExtensionObject,
        token_signature: &SignatureData,
        activation: &Activation,
    ) -> Result<Principal, StatusCode> {
        let token_policy = token_security_policy(activation.endpoint.0);
        if token.is_null() {
            return self.anonymous(&UAString::null());
        }
        if let Some(t) = token.inner_as::<AnonymousIdentityToken>() {
            return self.anonymous(&t.policy_id);
        }
        if let Some(t) = token.inner_as::<UserNameIdentityToken>() {
            return self.username(t, token_policy, activation);
        }
        if let Some(t) = token.inner_as::<X509IdentityToken>() {
            return self.x509(t, token_signature, token_policy, activation);
        }
        tracing::info!(token = ?token.type_name(), "unsupported user identity token");
        Err(StatusCode::BadIdentityTokenInvalid)
    }

    fn anonymous(&self, policy_id: &UAString) -> Result<Principal, StatusCode> {
        // Servers shall treat a null or empty policy id as matching (Part 4 §7.41.3).
        if !(policy_id.is_empty() || policy_id.as_ref() == ANONYMOUS_POLICY_ID) {
            return Err(StatusCode::BadIdentityTokenInvalid);
        }
        if !self.kinds.anonymous {
            return Err(StatusCode::BadIdentityTokenRejected);
        }
        Ok(self.users.anonymous())
    }

    fn username(
        &self,
        token: &UserNameIdentityToken,
        token_policy: SecurityPolicy,
        activation: &Activation,
    ) -> Result<Principal, StatusCode> {
        if token.policy_id.as_ref() != USERNAME_POLICY_ID {
            return Err(StatusCode::BadIdentityTokenInvalid);
        }
        if !self.kinds.username {
            return Err(StatusCode::BadIdentityTokenRejected);
        }
        let identity = self.identity.as_ref().ok_or(StatusCode::BadIdentityTokenRejected)?;
        let own = PeerCertificate::from_der(identity.certificate()).map_err(|_| StatusCode::BadInternalError)?;
        let data = token.password.value.as_deref().unwrap_or_default();
        let password = crate::session::decrypt_secret(
            identity.key().as_ref(),
            &own,
            token_policy,
            token.encryption_algorithm.as_ref(),
            data,
            &activation.server_nonce,
        )
        .map_err(|e| {
            tracing::info!(error = %e, "user name token does not decrypt");
            StatusCode::BadIdentityTokenInvalid
        })?;
        let name = token.user_name.as_ref();
        self.users.authenticate(name, &password).ok_or_else(|| {
            tracing::warn!(user = name, "user name or password wrong");
            StatusCode::BadUserAccessDenied
        })
    }

    fn x509(
        &self,
        token: &X509IdentityToken,
        signature: &SignatureData,
        token_policy: SecurityPolicy,
        activation: &Activation,
    ) -> Result<Principal, StatusCode> {
        if token.policy_id.as_ref() != X509_POLICY_ID {
            return Err(StatusCode::BadIdentityTokenInvalid);
        }
        let (true, Some(store), Some(identity)) = (self.kinds.x509, &self.user_pki, &self.identity) else {
            return Err(StatusCode::BadIdentityTokenRejected);
        };
        let der = token.certificate_data.value.as_deref().unwrap_or_default();
        let chain = split_chain(der).map_err(|_| StatusCode::BadIdentityTokenInvalid)?;
        // The signature algorithm comes from the token policy; the user's key must meet that policy's limits.
        let signed_policy = SecurityPolicy::from_uri(
            token_policy.uri(),
            if token_policy.is_deprecated() { DeprecatedPolicies::Allow } else { DeprecatedPolicies::Reject },
        )
        .map_err(|_| StatusCode::BadSecurityPolicyRejected)?;
        let ctx = ValidationContext::new(Role::Any, limits_for(signed_policy));
        let validated = store.validate(&chain, &ctx).map_err(|e| {
            tracing::warn!(status = %e.status_code(), "user certificate refused: {e}");
            StatusCode::BadIdentityTokenRejected
        })?;
        let user = PeerCertificate::from_der(der).map_err(|_| StatusCode::BadIdentityTokenInvalid)?;
        crate::session::verify(&user, signed_policy, identity.certificate(), &activation.server_nonce, signature)
            .map_err(|e| {
                tracing::warn!(error = %e, "user token signature invalid");
                StatusCode::BadUserSignatureInvalid
            })?;
        let leaf = validated.leaf();
        Ok(self.users.certificate_principal(&leaf.thumbprint(), leaf.subject(), leaf.common_name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::asymmetric::tests::cached;
    use crate::channel::policy::SecurityMode;
    use crate::server::access::UserRole;
    use opcua_types::ByteString;

    fn authenticator(dir: &std::path::Path) -> Authenticator {
        let (key, cert) = cached(2048, "server");
        let mut users = UserDatabase::empty();
        // Cheap cost for debug-build tests.
        let params = argon2::Params::new(1024, 1, 1, None).unwrap();
        let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
        let hash = argon.hash_password(b"pw", &SaltString::generate(&mut OsRng)).unwrap().to_string();
        users.add_hashed("op".into(), hash, UserRole::Operator).unwrap();
        Authenticator {
            kinds: UserTokenKinds { anonymous: true, username: true, x509: true },
            users: Arc::new(users),
            user_pki: Some(Arc::new(PkiStore::create_or_open(dir).unwrap())),
            identity: Some(LocalIdentity::new(key, cert).unwrap()),
        }
    }

    fn activation(policy: SecurityPolicy) -> Activation {
        Activation {
            session_id: opcua_types::NodeId::null(),
            server_nonce: vec![9; 32],
            endpoint: (policy, if policy.is_none() { SecurityMode::None } else { SecurityMode::SignAndEncrypt }),
            client_certificate: None,
            current: None,
            channel_changed: false,
            server_identity: None,
        }
    }

    fn password_token(
        a: &Authenticator,
        policy: SecurityPolicy,
        user: &str,
        pw: &[u8],
        nonce: &[u8],
    ) -> ExtensionObject {
        let own = PeerCertificate::from_der(a.identity.as_ref().unwrap().certificate()).unwrap();
        let sealed = crate::session::encrypt_secret(&own, token_security_policy(policy), pw, nonce).unwrap();
        ExtensionObject::from_message(UserNameIdentityToken {
            policy_id: USERNAME_POLICY_ID.into(),
            user_name: user.into(),
            password: sealed.data,
            encryption_algorithm: sealed.algorithm,
        })
    }

    #[test]
    fn anonymous_and_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let a = authenticator(dir.path());
        let none = SignatureData { algorithm: UAString::null(), signature: ByteString::null() };
        for policy in [SecurityPolicy::None, SecurityPolicy::Basic256Sha256, SecurityPolicy::Aes256Sha256RsaPss] {
            let act = activation(policy);
            assert_eq!(a.authenticate(&ExtensionObject::null(), &none, &act).unwrap().role, UserRole::Anonymous);
            let ok = password_token(&a, policy, "op", b"pw", &act.server_nonce);
            assert_eq!(
                a.authenticate(&ok, &none, &act).unwrap(),
                Principal { name: "op".into(), role: UserRole::Operator }
            );
            let wrong = password_token(&a, policy, "op", b"nope", &act.server_nonce);
            assert_eq!(a.authenticate(&wrong, &none, &act), Err(StatusCode::BadUserAccessDenied));
            let unknown = password_token(&a, policy, "ghost", b"pw", &act.server_nonce);
            assert_eq!(a.authenticate(&unknown, &none, &act), Err(StatusCode::BadUserAccessDenied));
            // Encrypted for another nonce (a replay into another session).
            let replay = password_token(&a, policy, "op", b"pw", &[1; 32]);
            assert_eq!(a.authenticate(&replay, &none, &act), Err(StatusCode::BadIdentityTokenInvalid));
        }
        let mut strict = a.clone();
        strict.kinds.anonymous = false;
        assert_eq!(
            strict.authenticate(&ExtensionObject::null(), &none, &activation(SecurityPolicy::None)),
            Err(StatusCode::BadIdentityTokenRejected)
        );
    }

    #[test]
    fn user_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let a = authenticator(dir.path());
        let (user_key, user_cert) = cached(2048, "client");
        let act = activation(SecurityPolicy::Basic256Sha256);
        let server_cert = a.identity.as_ref().unwrap().certificate().to_vec();
        let token = ExtensionObject::from_message(X509IdentityToken {
            policy_id: X509_POLICY_ID.into(),
            certificate_data: ByteString::from(user_cert.clone()),
        });
        let sig =
            crate::session::sign(user_key.as_ref(), SecurityPolicy::Basic256Sha256, &server_cert, &act.server_nonce)
                .unwrap();
        // Not trusted yet.
        assert_eq!(a.authenticate(&token, &sig, &act), Err(StatusCode::BadIdentityTokenRejected));
        a.user_pki.as_ref().unwrap().trust(&user_cert).unwrap();
        let principal = a.authenticate(&token, &sig, &act).unwrap();
        assert_eq!(principal.role, UserRole::Observer, "the default certificate role");
        // A signature over another nonce.
        let stale =
            crate::session::sign(user_key.as_ref(), SecurityPolicy::Basic256Sha256, &server_cert, &[0; 32]).unwrap();
        assert_eq!(a.authenticate(&token, &stale, &act), Err(StatusCode::BadUserSignatureInvalid));
    }

    #[test]
    fn policies_per_endpoint() {
        let all = UserTokenKinds { anonymous: true, username: true, x509: true };
        let none = policies(all, SecurityPolicy::None, true);
        assert_eq!(none.len(), 3);
        assert_eq!(none[1].security_policy_uri.as_ref(), SecurityPolicy::Basic256Sha256.uri());
        let secured = policies(all, SecurityPolicy::Aes256Sha256RsaPss, true);
        assert_eq!(secured[1].security_policy_uri.as_ref(), SecurityPolicy::Aes256Sha256RsaPss.uri());
        // Without a certificate a None endpoint cannot protect a password.
        assert_eq!(policies(all, SecurityPolicy::None, false).len(), 1);
    }
}
