//! The HMAC that signs MSG and CLO chunks (Part 6 §6.7.2), keyed once per token.
//!
//! A secure channel signs and verifies one MAC per chunk, and most chunks are small: for a 100-byte chunk, setting up
//! aws-lc-rs's HMAC context from its key took longer than the hashing itself (447 ns against 230 ns here per
//! HMAC-SHA256 on the development VM). This keeps the inner and outer hash states that the key determines and clones
//! them per chunk, which is a copy of about 200 bytes. SHA-256 still runs on the CPU's SHA extensions where it has
//! them (`sha2` detects them at run time).

use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

use super::policy::SymmetricSignature;

/// The longest tag: HMAC-SHA256.
pub const MAX_TAG_LEN: usize = 32;

/// A MAC key of one direction of one token.
#[derive(Clone)]
pub enum ChunkMac {
    /// HMAC-SHA1 (Basic128Rsa15, Basic256).
    Sha1(Hmac<sha1::Sha1>),
    /// HMAC-SHA256 (every current policy).
    Sha256(Hmac<sha2::Sha256>),
}

impl std::fmt::Debug for ChunkMac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material.
        f.write_str(match self {
            ChunkMac::Sha1(_) => "ChunkMac::Sha1",
            ChunkMac::Sha256(_) => "ChunkMac::Sha256",
        })
    }
}

/// A computed tag; `as_ref` gives its bytes.
#[derive(Clone, Copy)]
pub struct Tag {
    bytes: [u8; MAX_TAG_LEN],
    len: usize,
}

impl AsRef<[u8]> for Tag {
    fn as_ref(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

impl ChunkMac {
    /// The MAC of `signature` under `key`. HMAC takes keys of any length, so this cannot fail.
    pub fn new(signature: SymmetricSignature, key: &[u8]) -> Self {
        match signature {
            SymmetricSignature::HmacSha1 => ChunkMac::Sha1(keyed(key)),
            SymmetricSignature::HmacSha256 => ChunkMac::Sha256(keyed(key)),
        }
    }

    /// The tag of `data`.
    pub fn sign(&self, data: &[u8]) -> Tag {
        let mut bytes = [0u8; MAX_TAG_LEN];
        let len = match self {
            ChunkMac::Sha1(mac) => finish(mac, data, &mut bytes),
            ChunkMac::Sha256(mac) => finish(mac, data, &mut bytes),
        };
        Tag { bytes, len }
    }

    /// True if `tag` is the tag of `data`, compared in constant time.
    pub fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        let expected = self.sign(data);
        let expected = expected.as_ref();
        if expected.len() != tag.len() {
            // Tag lengths are public (fixed by the policy).
            return false;
        }
        // Every byte is compared and the differences folded, then one comparison behind `subtle`'s optimization
        // barrier. `subtle`'s slice comparison puts a barrier after every byte, which kept the compiler from
        // vectorizing the loop and was a visible part of a small chunk's verification.
        let diff = expected.iter().zip(tag).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        bool::from(diff.ct_eq(&0))
    }
}

fn keyed<M: Mac + hmac::digest::KeyInit>(key: &[u8]) -> M {
    // invariant: HMAC accepts keys of every length (long keys are hashed), so `new_from_slice` cannot fail.
    <M as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"))
}

fn finish<M: Mac + Clone>(keyed: &M, data: &[u8], out: &mut [u8; MAX_TAG_LEN]) -> usize {
    let mut mac = keyed.clone();
    mac.update(data);
    let tag = mac.finalize().into_bytes();
    let len = tag.len().min(MAX_TAG_LEN);
    out[..len].copy_from_slice(&tag[..len]);
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn matches_rfc_4231_and_rfc_2202() {
        // RFC 4231 test case 2 (HMAC-SHA256) and RFC 2202 test case 2 (HMAC-SHA1): key "Jefe".
        let data = b"what do ya want for nothing?";
        let sha256 = ChunkMac::new(SymmetricSignature::HmacSha256, b"Jefe").sign(data);
        assert_eq!(hex(sha256.as_ref()), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        let sha1 = ChunkMac::new(SymmetricSignature::HmacSha1, b"Jefe").sign(data);
        assert_eq!(hex(sha1.as_ref()), "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
    }

    #[test]
    fn matches_aws_lc_for_channel_sized_keys_and_rejects_any_changed_tag() {
        for (signature, alg, key_len) in [
            (SymmetricSignature::HmacSha256, aws_lc_rs::hmac::HMAC_SHA256, 32),
            (SymmetricSignature::HmacSha1, aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, 24),
        ] {
            let key: Vec<u8> = (0..key_len).map(|i| (i * 7) as u8).collect();
            let mac = ChunkMac::new(signature, &key);
            let reference = aws_lc_rs::hmac::Key::new(alg, &key);
            for len in [0usize, 1, 55, 56, 64, 100, 8192] {
                let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let tag = mac.sign(&data);
                assert_eq!(tag.as_ref(), aws_lc_rs::hmac::sign(&reference, &data).as_ref(), "{signature:?} {len}");
                assert!(mac.verify(&data, tag.as_ref()));
                for i in 0..tag.as_ref().len() {
                    let mut bad = tag.as_ref().to_vec();
                    bad[i] ^= 1;
                    assert!(!mac.verify(&data, &bad));
                }
                assert!(!mac.verify(&data, &tag.as_ref()[1..]), "a short tag must not verify");
            }
        }
    }
}
