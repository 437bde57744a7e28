//! Symmetric key derivation (Part 6 §6.7.5): the TLS `P_hash` PRF over the two OpenSecureChannel nonces.
//!
//! Client keys = PRF(secret = ServerNonce, seed = ClientNonce); server keys = PRF(secret = ClientNonce,
//! seed = ServerNonce). Each output is split SigningKey | EncryptingKey | InitializationVector. These keys are
//! per-channel session secrets made in software; application private keys never come near this module.

use std::fmt;

use aws_lc_rs::hmac;
use zeroize::Zeroizing;

use super::policy::{SecurityPolicy, SymmetricSignature};
use crate::error::{Error, Result};

/// `P_hash(secret, seed)` of RFC 5246 §5, truncated to `len` bytes:
/// `HMAC(secret, A(1) ‖ seed) ‖ HMAC(secret, A(2) ‖ seed) ‖ …` with `A(0) = seed`, `A(i) = HMAC(secret, A(i-1))`.
pub fn p_hash(alg: SymmetricSignature, secret: &[u8], seed: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let key = hmac::Key::new(alg.hmac(), secret);
    let mut out = Zeroizing::new(Vec::with_capacity(len + alg.len()));
    let mut a = hmac::sign(&key, seed);
    while out.len() < len {
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(a.as_ref());
        ctx.update(seed);
        out.extend_from_slice(ctx.sign().as_ref());
        a = hmac::sign(&key, a.as_ref());
    }
    out.truncate(len);
    out
}

/// One direction's keys: what one side signs and encrypts with, and the other verifies and decrypts with.
#[derive(Clone)]
pub struct DerivedKeys {
    signing_key: Zeroizing<Vec<u8>>,
    encrypting_key: Zeroizing<Vec<u8>>,
    iv: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for DerivedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DerivedKeys")
            .field("signing_key_len", &self.signing_key.len())
            .field("encrypting_key_len", &self.encrypting_key.len())
            .finish_non_exhaustive()
    }
}

impl DerivedKeys {
    /// Derives one direction's keys for `policy` from `secret` and `seed`.
    pub fn derive(policy: SecurityPolicy, secret: &[u8], seed: &[u8]) -> Result<Self> {
        let alg = policy.symmetric_signature().ok_or(Error::InvalidState("policy None derives no keys"))?;
        let (s, e, b) = (policy.derived_signing_key_len(), policy.encrypting_key_len(), policy.encrypting_block_len());
        let material = p_hash(alg, secret, seed, s + e + b);
        let part = |from: usize, to: usize| -> Result<Zeroizing<Vec<u8>>> {
            material.get(from..to).map(|k| Zeroizing::new(k.to_vec())).ok_or(Error::Crypto("key material too short"))
        };
        Ok(DerivedKeys { signing_key: part(0, s)?, encrypting_key: part(s, s + e)?, iv: part(s + e, s + e + b)? })
    }

    /// The HMAC key.
    pub fn signing_key(&self) -> &[u8] {
        &self.signing_key
    }

    /// The AES key.
    pub fn encrypting_key(&self) -> &[u8] {
        &self.encrypting_key
    }

    /// The AES-CBC initialisation vector (the same for every chunk of the token, as Part 6 specifies).
    pub fn iv(&self) -> &[u8] {
        &self.iv
    }
}

/// Both directions' keys of one security token.
#[derive(Clone, Debug)]
pub struct ChannelKeys {
    /// Keys that secure what the client sends.
    pub client: DerivedKeys,
    /// Keys that secure what the server sends.
    pub server: DerivedKeys,
}

impl ChannelKeys {
    /// Derives both directions from the nonces, checking their length first (`BadNonceInvalid`).
    pub fn derive(policy: SecurityPolicy, client_nonce: &[u8], server_nonce: &[u8]) -> Result<Self> {
        for nonce in [client_nonce, server_nonce] {
            if nonce.len() != policy.nonce_len() {
                return Err(Error::NonceInvalid { expected: policy.nonce_len(), got: nonce.len() });
            }
        }
        Ok(ChannelKeys {
            client: DerivedKeys::derive(policy, server_nonce, client_nonce)?,
            server: DerivedKeys::derive(policy, client_nonce, server_nonce)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// The TLS 1.2 PRF test vector (SHA-256) published on the IETF TLS list: PRF(secret, "test label", seed) =
    /// P_SHA256(secret, "test label" ‖ seed).
    #[test]
    fn p_sha256_matches_the_tls12_prf_test_vector() {
        let secret = h("9bbe436ba940f017b17652849a71db35");
        let mut seed = b"test label".to_vec();
        seed.extend(h("a0ba9f936cda311827a6f796ffd5198c"));
        let expected = h("e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a6b301791e90d35c9c9a46b4e14baf9af\
                          0fa022f7077def17abfd3797c0564bab4fbc91666e9def9b97fce34f796789baa48082d122ee42c5a72e5a5110fff7\
                          0187347b66");
        assert_eq!(*p_hash(SymmetricSignature::HmacSha256, &secret, &seed, 100), expected);
        // Any prefix is the same stream.
        assert_eq!(*p_hash(SymmetricSignature::HmacSha256, &secret, &seed, 33), expected[..33]);
    }

    /// P_SHA1 cross-checked against an independent computation (Python's `hmac` module).
    #[test]
    fn p_sha1_matches_an_independent_reference() {
        let secret: Vec<u8> = (0u8..32).collect();
        let seed: Vec<u8> = (32u8..64).collect();
        let expected =
            h("df59132c2af6d230e4337732076a14561694be12838cc00203d63c816653d75ba7c59ceaf7b96bbf2b9501fae4833dde\
                          8fe860b1299ae3704b19940efb8104f9f060103a1afea91a3659f1659d75d5d3");
        assert_eq!(*p_hash(SymmetricSignature::HmacSha1, &secret, &seed, 80), expected);
    }

    /// Client keys take the server nonce as secret; server keys the client nonce (reference from Python `hmac`).
    #[test]
    fn channel_keys_use_the_nonces_the_right_way_round() {
        let (cn, sn) = ([0x11u8; 32], [0x22u8; 32]);
        let keys = ChannelKeys::derive(SecurityPolicy::Basic256Sha256, &cn, &sn).unwrap();
        let client =
            h("b215456a6843e40769d120b403bf075e0463ff7cd7160c3642a495b6a0011a5dc2d0f9d537407ba3b723633506382de2\
                        f146fc1d745a0200a10c36db791c8d918bf5cf64d5389b5037a88984cd040752");
        let server =
            h("968d3c4f5dcd202f5546ecac42c75ab99075ef4be718e39e81145df0cabacdd59fe8bf2999347f572b16d4c507c85443\
                        75e06c25068ff17fa69a2fca967c56ac3f2521b112c7cbd85265b4452cd6a14e");
        assert_eq!(keys.client.signing_key(), &client[..32]);
        assert_eq!(keys.client.encrypting_key(), &client[32..64]);
        assert_eq!(keys.client.iv(), &client[64..80]);
        assert_eq!(keys.server.signing_key(), &server[..32]);
        assert_eq!(keys.server.encrypting_key(), &server[32..64]);
        assert_eq!(keys.server.iv(), &server[64..80]);
    }

    #[test]
    fn split_lengths_follow_the_policy() {
        for p in SecurityPolicy::ALL.into_iter().filter(|p| !p.is_none()) {
            let cn = vec![1u8; p.nonce_len()];
            let sn = vec![2u8; p.nonce_len()];
            let keys = ChannelKeys::derive(p, &cn, &sn).unwrap();
            for k in [&keys.client, &keys.server] {
                assert_eq!(k.signing_key().len(), p.derived_signing_key_len(), "{p}");
                assert_eq!(k.encrypting_key().len(), p.encrypting_key_len(), "{p}");
                assert_eq!(k.iv().len(), 16, "{p}");
            }
            // The split is a prefix-cut of one PRF stream.
            let alg = p.symmetric_signature().unwrap();
            let total = p.derived_signing_key_len() + p.encrypting_key_len() + 16;
            let stream = p_hash(alg, &sn, &cn, total);
            let joined = [keys.client.signing_key(), keys.client.encrypting_key(), keys.client.iv()].concat();
            assert_eq!(*stream, joined);
            assert_ne!(keys.client.signing_key(), keys.server.signing_key());
        }
    }

    #[test]
    fn wrong_nonce_lengths_are_rejected() {
        let e = ChannelKeys::derive(SecurityPolicy::Basic256Sha256, &[0; 31], &[0; 32]).unwrap_err();
        assert_eq!(e.status_code(), opcua_types::StatusCode::BadNonceInvalid);
        assert!(ChannelKeys::derive(SecurityPolicy::None, &[], &[]).is_err());
    }

    #[test]
    fn debug_does_not_print_keys() {
        let keys = DerivedKeys::derive(SecurityPolicy::Basic256Sha256, &[7; 32], &[9; 32]).unwrap();
        let text = format!("{keys:?}");
        assert!(!text.contains(&format!("{:?}", keys.signing_key())));
    }
}
