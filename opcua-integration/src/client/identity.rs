//! User identities and the identity tokens of ActivateSession (Part 4 §7.41).
//!
//! The token follows the endpoint's UserTokenPolicy: its policyId, and its securityPolicyUri (or, when that is
//! empty, the channel's policy) for encrypting a password and for the X.509 token's signature. An X.509 user's key
//! is a vault key like the application's: the userTokenSignature is made inside the vault.
//!
//! ```
//! use certvault_opcua::client::UserIdentity;
//! let user = UserIdentity::user_name("operator", "correct horse");
//! assert_eq!(format!("{user:?}"), r#"UserName { user: "operator", password: "<redacted>" }"#);
//! ```

use std::fmt;

use certvault::SharedKey;
use opcua_types::{
    AnonymousIdentityToken, ByteString, EndpointDescription, ExtensionObject, MessageSecurityMode, SignatureData,
    UAString, UserNameIdentityToken, UserTokenPolicy, UserTokenType, X509IdentityToken,
};
use zeroize::Zeroizing;

use crate::channel::asymmetric::PeerCertificate;
use crate::channel::policy::{DeprecatedPolicies, SecurityPolicy};
use crate::error::{Error, Result};
use crate::session;

/// Who the session acts for.
#[derive(Clone, Default)]
pub enum UserIdentity {
    /// No user.
    #[default]
    Anonymous,
    /// A user name and password; the password is wiped from memory when dropped.
    UserName {
        /// The user name.
        user: String,
        /// The password.
        password: Zeroizing<String>,
    },
    /// A user certificate whose private key is in a vault.
    X509 {
        /// The user's certificate (DER).
        certificate: Vec<u8>,
        /// The user's key, in a vault: it signs the userTokenSignature.
        key: SharedKey,
    },
}

impl fmt::Debug for UserIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserIdentity::Anonymous => f.write_str("Anonymous"),
            UserIdentity::UserName { user, .. } => {
                f.debug_struct("UserName").field("user", user).field("password", &"<redacted>").finish()
            }
            UserIdentity::X509 { certificate, key } => f
                .debug_struct("X509")
                .field("certificate_len", &certificate.len())
                .field("key", &key.info().label)
                .finish(),
        }
    }
}

impl UserIdentity {
    /// A user name and password.
    pub fn user_name(user: impl Into<String>, password: impl Into<String>) -> Self {
        UserIdentity::UserName { user: user.into(), password: Zeroizing::new(password.into()) }
    }

    /// A user certificate and its vault key.
    pub fn x509(certificate: Vec<u8>, key: SharedKey) -> Self {
        UserIdentity::X509 { certificate, key }
    }

    /// The token type this identity needs in a UserTokenPolicy.
    pub fn token_type(&self) -> UserTokenType {
        match self {
            UserIdentity::Anonymous => UserTokenType::Anonymous,
            UserIdentity::UserName { .. } => UserTokenType::UserName,
            UserIdentity::X509 { .. } => UserTokenType::Certificate,
        }
    }
}

/// The endpoint's first UserTokenPolicy of `identity`'s token type; [`Error::IdentityTokenRejected`] if it has none.
pub fn select_token_policy<'a>(
    endpoint: &'a EndpointDescription,
    identity: &UserIdentity,
) -> Result<&'a UserTokenPolicy> {
    let wanted = identity.token_type();
    endpoint.user_identity_tokens.iter().flatten().find(|p| p.token_type == wanted).ok_or_else(|| {
        Error::IdentityTokenRejected(format!(
            "the endpoint ({}, {:?}) offers no {wanted:?} user token policy",
            endpoint.security_policy_uri.as_ref(),
            endpoint.security_mode
        ))
    })
}

/// The security policy that protects a token: the token policy's, or the channel's when the token policy names
/// none (Part 4 §7.41: "if not specified, the SecurityPolicy of the Endpoint is used").
pub fn token_security_policy(
    policy: &UserTokenPolicy,
    channel: SecurityPolicy,
    deprecated: DeprecatedPolicies,
) -> Result<SecurityPolicy> {
    let uri = policy.security_policy_uri.as_ref();
    if uri.is_empty() {
        return Ok(channel);
    }
    SecurityPolicy::from_uri(uri, deprecated).map_err(|e| {
        Error::IdentityTokenRejected(format!("the user token policy {:?}: {e}", policy.policy_id.as_ref()))
    })
}

/// What a token is bound to.
pub(crate) struct TokenContext<'a> {
    pub endpoint: &'a EndpointDescription,
    pub channel_policy: SecurityPolicy,
    pub server_certificate: Option<&'a PeerCertificate>,
    pub server_nonce: &'a [u8],
    pub deprecated: DeprecatedPolicies,
    pub allow_unencrypted_password: bool,
}

/// The user identity token and the userTokenSignature for ActivateSession.
pub(crate) fn build_token(identity: &UserIdentity, ctx: &TokenContext<'_>) -> Result<(ExtensionObject, SignatureData)> {
    let empty = SignatureData { algorithm: UAString::null(), signature: ByteString::null() };
    let policy = select_token_policy(ctx.endpoint, identity)?;
    let policy_id = policy.policy_id.clone();
    match identity {
        UserIdentity::Anonymous => Ok((ExtensionObject::from_message(AnonymousIdentityToken { policy_id }), empty)),
        UserIdentity::UserName { user, password } => {
            let security = token_security_policy(policy, ctx.channel_policy, ctx.deprecated)?;
            // A token policy of None inside a SignAndEncrypt channel (what asyncua and others offer) is protected by
            // the channel's encryption; only where the channel does not encrypt would the password be readable.
            let channel_encrypts =
                ctx.endpoint.security_mode == MessageSecurityMode::SignAndEncrypt && !ctx.channel_policy.is_none();
            let sealed = match (security.is_none(), ctx.server_certificate) {
                (true, _) if !channel_encrypts && !ctx.allow_unencrypted_password => {
                    return Err(Error::IdentityTokenRejected(
                        "the password would travel unencrypted (token policy None, channel not encrypted); allow it \
                         explicitly with SessionOptions::allow_unencrypted_password"
                            .into(),
                    ))
                }
                (true, _) => session::EncryptedSecret {
                    data: ByteString::from(password.as_bytes().to_vec()),
                    algorithm: UAString::null(),
                },
                (false, Some(server)) => {
                    session::encrypt_secret(server, security, password.as_bytes(), ctx.server_nonce)?
                }
                (false, None) => {
                    return Err(Error::IdentityTokenRejected("no server certificate to encrypt the password to".into()))
                }
            };
            let token = UserNameIdentityToken {
                policy_id,
                user_name: user.as_str().into(),
                password: sealed.data,
                encryption_algorithm: sealed.algorithm,
            };
            Ok((ExtensionObject::from_message(token), empty))
        }
        UserIdentity::X509 { certificate, key } => {
            let security = token_security_policy(policy, ctx.channel_policy, ctx.deprecated)?;
            if security.is_none() {
                return Err(Error::IdentityTokenRejected(
                    "an X.509 user token needs a security policy to sign with, and both the token policy and the \
                     channel have None"
                        .into(),
                ));
            }
            let server = ctx
                .server_certificate
                .ok_or_else(|| Error::IdentityTokenRejected("no server certificate to sign the token over".into()))?;
            // The user's key signs serverCertificate || serverNonce in its vault, as the application key does for
            // the clientSignature.
            let signature = session::sign(key.as_ref(), security, server.certificate(), ctx.server_nonce)?;
            let token = X509IdentityToken { policy_id, certificate_data: ByteString::from(certificate.clone()) };
            Ok((ExtensionObject::from_message(token), signature))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(id: &str, kind: UserTokenType, uri: &str) -> UserTokenPolicy {
        UserTokenPolicy {
            policy_id: id.into(),
            token_type: kind,
            issued_token_type: UAString::null(),
            issuer_endpoint_url: UAString::null(),
            security_policy_uri: uri.into(),
        }
    }

    fn endpoint() -> EndpointDescription {
        EndpointDescription {
            security_policy_uri: SecurityPolicy::Basic256Sha256.uri().into(),
            security_mode: MessageSecurityMode::SignAndEncrypt,
            user_identity_tokens: Some(vec![
                policy("anon", UserTokenType::Anonymous, ""),
                policy("pw", UserTokenType::UserName, ""),
                policy("cert", UserTokenType::Certificate, SecurityPolicy::Basic128Rsa15.uri()),
            ]),
            ..Default::default()
        }
    }

    #[test]
    fn token_policy_selection() {
        let e = endpoint();
        assert_eq!(select_token_policy(&e, &UserIdentity::Anonymous).unwrap().policy_id.as_ref(), "anon");
        assert_eq!(select_token_policy(&e, &UserIdentity::user_name("u", "p")).unwrap().policy_id.as_ref(), "pw");
        let none = EndpointDescription { user_identity_tokens: None, ..e.clone() };
        assert_eq!(
            select_token_policy(&none, &UserIdentity::Anonymous).unwrap_err().status_code(),
            opcua_types::StatusCode::BadIdentityTokenRejected
        );

        // An empty securityPolicyUri means the channel's policy; a deprecated one needs the opt-in.
        let pw = select_token_policy(&e, &UserIdentity::user_name("u", "p")).unwrap();
        assert_eq!(
            token_security_policy(pw, SecurityPolicy::Aes256Sha256RsaPss, DeprecatedPolicies::Reject).unwrap(),
            SecurityPolicy::Aes256Sha256RsaPss
        );
        let cert = &e.user_identity_tokens.as_ref().unwrap()[2];
        assert!(token_security_policy(cert, SecurityPolicy::Basic256Sha256, DeprecatedPolicies::Reject).is_err());
        assert_eq!(
            token_security_policy(cert, SecurityPolicy::Basic256Sha256, DeprecatedPolicies::Allow).unwrap(),
            SecurityPolicy::Basic128Rsa15
        );
    }

    #[test]
    fn plaintext_passwords_need_the_opt_in() {
        let e = EndpointDescription {
            security_policy_uri: SecurityPolicy::None.uri().into(),
            security_mode: MessageSecurityMode::None,
            ..endpoint()
        };
        let mut ctx = TokenContext {
            endpoint: &e,
            channel_policy: SecurityPolicy::None,
            server_certificate: None,
            server_nonce: &[],
            deprecated: DeprecatedPolicies::Reject,
            allow_unencrypted_password: false,
        };
        let user = UserIdentity::user_name("u", "secret");
        assert!(build_token(&user, &ctx).is_err());
        ctx.allow_unencrypted_password = true;
        let (token, signature) = build_token(&user, &ctx).unwrap();
        let token = token.inner_as::<UserNameIdentityToken>().unwrap();
        assert_eq!(token.password.value.as_deref(), Some(&b"secret"[..]));
        assert!(token.encryption_algorithm.is_null());
        assert!(signature.signature.is_null());
    }

    /// asyncua offers a UserName token policy with securityPolicyUri None on its SignAndEncrypt endpoints: the
    /// channel encrypts the password, so no opt-in is needed; over a Sign channel it would travel readable.
    #[test]
    fn a_none_token_policy_inside_an_encrypting_channel_needs_no_opt_in() {
        let mut e = endpoint();
        e.user_identity_tokens = Some(vec![policy("username", UserTokenType::UserName, SecurityPolicy::None.uri())]);
        let mut ctx = TokenContext {
            endpoint: &e,
            channel_policy: SecurityPolicy::Basic256Sha256,
            server_certificate: None,
            server_nonce: &[],
            deprecated: DeprecatedPolicies::Reject,
            allow_unencrypted_password: false,
        };
        let user = UserIdentity::user_name("u", "secret");
        let (token, _) = build_token(&user, &ctx).unwrap();
        let token = token.inner_as::<UserNameIdentityToken>().unwrap();
        assert_eq!(token.password.value.as_deref(), Some(&b"secret"[..]));
        assert!(token.encryption_algorithm.is_null());

        let signed_only = EndpointDescription { security_mode: MessageSecurityMode::Sign, ..e.clone() };
        ctx.endpoint = &signed_only;
        assert_eq!(
            build_token(&user, &ctx).unwrap_err().status_code(),
            opcua_types::StatusCode::BadIdentityTokenRejected
        );
        ctx.allow_unencrypted_password = true;
        assert!(build_token(&user, &ctx).is_ok());
    }
}
