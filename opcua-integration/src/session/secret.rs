//! The legacy encrypted secret of UserNameIdentityToken passwords (Part 4 §7.41.2.2).
//!
//! The plaintext is `length (UInt32) || secret || serverNonce`, where `length` counts the secret and the nonce; it is
//! RSA-encrypted to the server certificate with the asymmetric encryption of the token's security policy, block by
//! block. The server decrypts in its vault, one block per call, and checks that the nonce is the one it last
//! issued to the session, so a captured token cannot be replayed into another session.

use certvault::{DecryptAlg, VaultKey};
use opcua_types::ByteString;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::channel::asymmetric::PeerCertificate;
use crate::channel::policy::SecurityPolicy;
use crate::error::{Error, Result};

/// Longest secret accepted: passwords, not documents.
pub const MAX_SECRET_LEN: usize = 4096;

/// An encrypted secret and the URI of the algorithm that encrypted it (null for policy None).
#[derive(Clone, Debug)]
pub struct EncryptedSecret {
    /// The ciphertext (or, with policy None, the secret itself).
    pub data: ByteString,
    /// The EncryptionAlgorithm field of the token.
    pub algorithm: opcua_types::UAString,
}

fn rsa_block_lens(cert: &PeerCertificate, alg: DecryptAlg) -> Result<(usize, usize)> {
    let certvault::KeyAlgorithm::Rsa { bits } = cert.public_key().algorithm() else {
        return Err(Error::Crypto("user secrets are encrypted with RSA keys only"));
    };
    let cipher = (bits as usize).div_ceil(8);
    Ok((alg.max_plaintext(cipher), cipher))
}

/// Encrypts `secret` for the server whose certificate is `server` under `policy`, binding it to `server_nonce`.
/// With policy None the secret travels as it is (the caller decides whether the channel protects it).
pub fn encrypt_secret(
    server: &PeerCertificate,
    policy: SecurityPolicy,
    secret: &[u8],
    server_nonce: &[u8],
) -> Result<EncryptedSecret> {
    let (Some(alg), Some(uri)) = (policy.asymmetric_encryption(), policy.asymmetric_encryption_uri()) else {
        return Ok(EncryptedSecret {
            data: ByteString::from(secret.to_vec()),
            algorithm: opcua_types::UAString::null(),
        });
    };
    if secret.len() > MAX_SECRET_LEN {
        return Err(Error::EncodingLimitsExceeded(format!("a secret of {} bytes is too long", secret.len())));
    }
    let len = u32::try_from(secret.len() + server_nonce.len())
        .map_err(|_| Error::EncodingLimitsExceeded("secret too long".into()))?;
    let mut plain = Zeroizing::new(Vec::with_capacity(4 + len as usize));
    plain.extend_from_slice(&len.to_le_bytes());
    plain.extend_from_slice(secret);
    plain.extend_from_slice(server_nonce);
    let (block, _) = rsa_block_lens(server, alg)?;
    if block == 0 {
        return Err(Error::Crypto("the server key is too small for its policy"));
    }
    let mut out = Vec::new();
    for part in plain.chunks(block) {
        out.extend_from_slice(&server.public_key().encrypt(alg, part)?);
    }
    Ok(EncryptedSecret { data: ByteString::from(out), algorithm: uri.into() })
}

/// Decrypts a secret in the vault and checks its framing and nonce.
///
/// `algorithm` is the token's EncryptionAlgorithm field; it must be the one `policy` names. The errors do not
/// say which check failed beyond what an operator needs: the caller answers every one with the same status
/// (BadIdentityTokenInvalid), so a client learns nothing about the plaintext.
pub fn decrypt_secret(
    key: &dyn VaultKey,
    own_certificate: &PeerCertificate,
    policy: SecurityPolicy,
    algorithm: &str,
    data: &[u8],
    server_nonce: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let (Some(alg), Some(uri)) = (policy.asymmetric_encryption(), policy.asymmetric_encryption_uri()) else {
        if !algorithm.is_empty() {
            return Err(Error::SignatureInvalid(format!(
                "unexpected encryption algorithm {algorithm:?} for policy None"
            )));
        }
        return Ok(Zeroizing::new(data.to_vec()));
    };
    if algorithm != uri {
        return Err(Error::SignatureInvalid(format!(
            "encryption algorithm {algorithm:?}, but {} uses {uri}",
            policy.name()
        )));
    }
    let (_, cipher) = rsa_block_lens(own_certificate, alg)?;
    if data.is_empty() || cipher == 0 || !data.len().is_multiple_of(cipher) || data.len() / cipher > 64 {
        return Err(Error::SignatureInvalid("the secret is not whole RSA blocks".into()));
    }
    let mut plain = Zeroizing::new(Vec::with_capacity(data.len()));
    for block in data.chunks(cipher) {
        // One vault call per RSA block, as for OpenSecureChannel.
        plain.extend_from_slice(&key.decrypt(alg, block)?);
    }
    let (len_bytes, rest) = plain.split_first_chunk::<4>().ok_or(Error::SignatureInvalid("short secret".into()))?;
    let len = u32::from_le_bytes(*len_bytes) as usize;
    if len != rest.len() || len < server_nonce.len() {
        return Err(Error::SignatureInvalid("the secret's length field is wrong".into()));
    }
    let (secret, nonce) = rest.split_at(len - server_nonce.len());
    if !bool::from(nonce.ct_eq(server_nonce)) {
        return Err(Error::SignatureInvalid("the secret is bound to another nonce".into()));
    }
    Ok(Zeroizing::new(secret.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::asymmetric::tests::cached;

    #[test]
    fn round_trip_every_policy_and_refusals() {
        let (key, cert) = cached(2048, "server");
        let peer = PeerCertificate::from_der(&cert).unwrap();
        let nonce = [7u8; 32];
        for policy in
            [SecurityPolicy::Basic256Sha256, SecurityPolicy::Aes128Sha256RsaOaep, SecurityPolicy::Aes256Sha256RsaPss]
        {
            for secret in [&b""[..], b"secret", &[b'x'; 600][..]] {
                let sealed = encrypt_secret(&peer, policy, secret, &nonce).unwrap();
                let data = sealed.data.value.clone().unwrap();
                let alg = sealed.algorithm.as_ref().to_owned();
                let back = decrypt_secret(key.as_ref(), &peer, policy, &alg, &data, &nonce).unwrap();
                assert_eq!(&back[..], secret);
                // Bound to the nonce.
                assert!(decrypt_secret(key.as_ref(), &peer, policy, &alg, &data, &[8u8; 32]).is_err());
                // A wrong algorithm URI.
                assert!(decrypt_secret(key.as_ref(), &peer, policy, "urn:x", &data, &nonce).is_err());
                // Truncated: not whole blocks.
                assert!(decrypt_secret(key.as_ref(), &peer, policy, &alg, &data[..data.len() - 1], &nonce).is_err());
            }
        }
        // Policy None: the secret travels as is.
        let plain = encrypt_secret(&peer, SecurityPolicy::None, b"pw", &nonce).unwrap();
        assert_eq!(plain.data.value.as_deref(), Some(&b"pw"[..]));
        assert!(plain.algorithm.is_null());
    }

    #[test]
    fn the_wrong_key_fails() {
        let (_, cert) = cached(2048, "server");
        let (other, _) = cached(2048, "client");
        let peer = PeerCertificate::from_der(&cert).unwrap();
        let sealed = encrypt_secret(&peer, SecurityPolicy::Basic256Sha256, b"pw", &[1; 32]).unwrap();
        let data = sealed.data.value.unwrap();
        assert!(decrypt_secret(
            other.as_ref(),
            &peer,
            SecurityPolicy::Basic256Sha256,
            sealed.algorithm.as_ref(),
            &data,
            &[1; 32]
        )
        .is_err());
    }
}
