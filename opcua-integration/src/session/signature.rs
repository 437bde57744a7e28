//! SignatureData: the signature over a certificate and a nonce that proves possession of a private key.
//!
//! CreateSession's serverSignature signs clientCertificate || clientNonce, ActivateSession's clientSignature signs
//! serverCertificate || serverNonce, and an X509IdentityToken's userTokenSignature signs the same as the
//! clientSignature with the user's key. The algorithm is the asymmetric signature of the security policy in force:
//! the channel's, or for a user token the token policy's.

use certvault::VaultKey;
use opcua_types::{ByteString, SignatureData, UAString};

use crate::channel::asymmetric::PeerCertificate;
use crate::channel::policy::SecurityPolicy;
use crate::error::{Error, Result};

/// Signs `certificate || nonce` with `key` under `policy`. Policy None gives an empty SignatureData, as the
/// specification asks.
///
/// ```no_run
/// # fn demo(key: &dyn certvault::VaultKey, client_cert: &[u8], client_nonce: &[u8]) -> certvault_opcua::Result<()> {
/// use certvault_opcua::channel::policy::SecurityPolicy;
/// let server_signature = certvault_opcua::session::sign(key, SecurityPolicy::Basic256Sha256, client_cert, client_nonce)?;
/// # Ok(()) }
/// ```
pub fn sign(key: &dyn VaultKey, policy: SecurityPolicy, certificate: &[u8], nonce: &[u8]) -> Result<SignatureData> {
    let (Some(alg), Some(uri)) = (policy.asymmetric_signature(), policy.asymmetric_signature_uri()) else {
        return Ok(SignatureData { algorithm: UAString::null(), signature: ByteString::null() });
    };
    let mut data = Vec::with_capacity(certificate.len() + nonce.len());
    data.extend_from_slice(certificate);
    data.extend_from_slice(nonce);
    let signature = key.sign(alg, &data)?;
    Ok(SignatureData { algorithm: uri.into(), signature: ByteString::from(signature) })
}

/// Checks that `signature` is `signer`'s signature over `certificate || nonce` under `policy`.
///
/// A wrong algorithm URI, an empty signature or one that does not verify is [`Error::SignatureInvalid`]; the
/// caller maps it to the status its service names (BadApplicationSignatureInvalid, BadUserSignatureInvalid,
/// BadIdentityTokenRejected).
pub fn verify(
    signer: &PeerCertificate,
    policy: SecurityPolicy,
    certificate: &[u8],
    nonce: &[u8],
    signature: &SignatureData,
) -> Result<()> {
    let (Some(alg), Some(uri)) = (policy.asymmetric_signature(), policy.asymmetric_signature_uri()) else {
        return Ok(());
    };
    if signature.algorithm.as_ref() != uri {
        return Err(Error::SignatureInvalid(format!(
            "algorithm {:?}, but {} signs with {uri}",
            signature.algorithm.as_ref(),
            policy.name()
        )));
    }
    let sig = signature.signature.value.as_deref().unwrap_or_default();
    if sig.is_empty() {
        return Err(Error::SignatureInvalid("the signature is empty".into()));
    }
    let mut data = Vec::with_capacity(certificate.len() + nonce.len());
    data.extend_from_slice(certificate);
    data.extend_from_slice(nonce);
    signer.public_key().verify(alg, &data, sig).map_err(|e| Error::SignatureInvalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::asymmetric::tests::cached;

    #[test]
    fn sign_verify_and_tamper() {
        let (key, cert) = cached(2048, "server");
        let peer = PeerCertificate::from_der(&cert).unwrap();
        for policy in
            [SecurityPolicy::Basic256Sha256, SecurityPolicy::Aes128Sha256RsaOaep, SecurityPolicy::Aes256Sha256RsaPss]
        {
            let sig = sign(key.as_ref(), policy, b"client-cert", b"nonce").unwrap();
            verify(&peer, policy, b"client-cert", b"nonce", &sig).unwrap();
            assert!(verify(&peer, policy, b"client-cert", b"other", &sig).is_err(), "another nonce");
            let mut bad = sig.clone();
            if let Some(bytes) = bad.signature.value.as_mut() {
                bytes[10] ^= 1;
            }
            assert!(verify(&peer, policy, b"client-cert", b"nonce", &bad).is_err(), "a flipped bit");
            let mut wrong_alg = sig.clone();
            wrong_alg.algorithm = "http://www.w3.org/2000/09/xmldsig#rsa-sha1".into();
            assert!(matches!(
                verify(&peer, policy, b"client-cert", b"nonce", &wrong_alg),
                Err(Error::SignatureInvalid(_))
            ));
        }
        // The signature of another key.
        let (other, _) = cached(2048, "client");
        let sig = sign(other.as_ref(), SecurityPolicy::Basic256Sha256, b"c", b"n").unwrap();
        assert!(verify(&peer, SecurityPolicy::Basic256Sha256, b"c", b"n", &sig).is_err());
        // None: nothing to sign, nothing to check.
        let none = sign(key.as_ref(), SecurityPolicy::None, b"c", b"n").unwrap();
        assert!(none.signature.is_null());
    }
}
