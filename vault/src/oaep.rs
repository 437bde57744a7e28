//! Constant-time RSA decryption padding checks, for tokens that can only do raw RSA (`CKM_RSA_X_509`) for a scheme.
//!
//! SoftHSM2 2.6 rejects OAEP with SHA-256 (`CKR_ARGUMENTS_BAD`), so the PKCS#11 backend decrypts raw on the token
//! and removes the padding here. Padding checks are the classic oracle (Manger's attack on OAEP, Bleichenbacher's on
//! PKCS#1 v1.5), so:
//! - every check runs on every byte, whatever the input, and the results are combined with `subtle` masks;
//! - there is exactly one error, [`VaultError::DecryptFailed`], for every way the padding can be wrong.
//!
//! The only data-dependent branch is the final accept/reject and the copy of the message, whose length the caller
//! learns anyway.

use subtle::{Choice, ConditionallySelectable, ConstantTimeEq, ConstantTimeGreater};
use zeroize::Zeroizing;

use crate::error::{Result, VaultError};
use crate::key::HashAlg;

/// MGF1 (RFC 8017 §B.2.1) with `hash`, XORed into `out` in place.
fn mgf1_xor(hash: HashAlg, seed: &[u8], out: &mut [u8]) {
    let mut counter: u32 = 0;
    for chunk in out.chunks_mut(hash.output_len()) {
        let mut input = Zeroizing::new(Vec::with_capacity(seed.len() + 4));
        input.extend_from_slice(seed);
        input.extend_from_slice(&counter.to_be_bytes());
        let mask = Zeroizing::new(hash.digest(&input));
        for (o, m) in chunk.iter_mut().zip(mask.iter()) {
            *o ^= m;
        }
        counter = counter.wrapping_add(1);
    }
}

/// Brings a raw RSA result to exactly `k` bytes: some tokens drop leading zero bytes of the integer.
fn left_pad(em: &[u8], k: usize) -> Result<Zeroizing<Vec<u8>>> {
    if em.len() > k {
        return Err(VaultError::DecryptFailed);
    }
    let mut out = Zeroizing::new(vec![0u8; k]);
    out[k - em.len()..].copy_from_slice(em);
    Ok(out)
}

/// EME-OAEP decoding (RFC 8017 §7.1.2 step 3) with MGF1 over the same hash and an empty label.
///
/// `em` is the raw RSA decryption of the ciphertext (the integer as big-endian bytes), `k` the modulus length in
/// bytes. Supports SHA-1 and SHA-256 (the hashes OPC UA uses), and any [`HashAlg`] in fact.
pub fn oaep_decode(hash: HashAlg, em: &[u8], k: usize) -> Result<Zeroizing<Vec<u8>>> {
    let h_len = hash.output_len();
    // Depends only on public sizes, so an early return leaks nothing.
    if k < 2 * h_len + 2 {
        return Err(VaultError::DecryptFailed);
    }
    let mut em = left_pad(em, k)?;
    let l_hash = hash.digest(b"");

    let (y, rest) = em.split_at_mut(1);
    let (masked_seed, masked_db) = rest.split_at_mut(h_len);
    mgf1_xor(hash, masked_db, masked_seed);
    let seed = &*masked_seed;
    mgf1_xor(hash, seed, masked_db);
    let db = &*masked_db;

    let mut good = y[0].ct_eq(&0);
    good &= db[..h_len].ct_eq(&l_hash);

    // DB = lHash || PS (zeros) || 0x01 || M: find the first 0x01 without branching on where it is.
    let ps_and_m = &db[h_len..];
    let mut looking = Choice::from(1u8);
    let mut index: u32 = 0;
    let mut bad_byte = Choice::from(0u8);
    for (i, &b) in ps_and_m.iter().enumerate() {
        let is_zero = b.ct_eq(&0);
        let is_one = b.ct_eq(&1);
        index.conditional_assign(&(i as u32), looking & is_one);
        bad_byte |= looking & !is_zero & !is_one;
        looking &= !is_one;
    }
    good &= !looking;
    good &= !bad_byte;

    if bool::from(good) {
        let start = index as usize + 1;
        Ok(Zeroizing::new(ps_and_m[start..].to_vec()))
    } else {
        Err(VaultError::DecryptFailed)
    }
}

/// EME-PKCS1-v1_5 decoding (RFC 8017 §7.2.2 step 3): `00 02 PS(>= 8 non-zero bytes) 00 M`.
///
/// Constant-time in where the padding fails, but the success/failure answer itself is a Bleichenbacher oracle if
/// the caller lets a peer observe it: this is for the deprecated Basic128Rsa15 only, behind an explicit key policy.
pub fn pkcs1v15_decode(em: &[u8], k: usize) -> Result<Zeroizing<Vec<u8>>> {
    if k < 11 {
        return Err(VaultError::DecryptFailed);
    }
    let em = left_pad(em, k)?;
    let mut good = em[0].ct_eq(&0) & em[1].ct_eq(&2);
    let mut looking = Choice::from(1u8);
    let mut index: u32 = 0;
    for (i, &b) in em.iter().enumerate().skip(2) {
        let is_zero = b.ct_eq(&0);
        index.conditional_assign(&(i as u32), looking & is_zero);
        looking &= !is_zero;
    }
    good &= !looking;
    // At least 8 padding bytes: the separator sits at index 10 or later.
    good &= index.ct_gt(&9);
    if bool::from(good) {
        Ok(Zeroizing::new(em[index as usize + 1..].to_vec()))
    } else {
        Err(VaultError::DecryptFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};

    /// Test-only EME-OAEP encoder (RFC 8017 §7.1.1 step 2).
    fn oaep_encode(hash: HashAlg, msg: &[u8], k: usize) -> Vec<u8> {
        let h_len = hash.output_len();
        assert!(msg.len() <= k - 2 * h_len - 2);
        let mut db = hash.digest(b"");
        db.resize(k - msg.len() - h_len - 2, 0);
        db.push(1);
        db.extend_from_slice(msg);
        let mut seed = vec![0u8; h_len];
        SystemRandom::new().fill(&mut seed).unwrap();
        mgf1_xor(hash, &seed, &mut db);
        mgf1_xor(hash, &db, &mut seed);
        let mut em = vec![0u8];
        em.extend_from_slice(&seed);
        em.extend_from_slice(&db);
        em
    }

    fn pkcs1_encode(msg: &[u8], k: usize) -> Vec<u8> {
        let mut em = vec![0u8, 2];
        while em.len() < k - msg.len() - 1 {
            let mut b = [0u8];
            SystemRandom::new().fill(&mut b).unwrap();
            if b[0] != 0 {
                em.push(b[0]);
            }
        }
        em.push(0);
        em.extend_from_slice(msg);
        em
    }

    #[test]
    fn mgf1_matches_rfc_8017_definition() {
        // MGF1-SHA-1("foo", 3) = 1ac907 (a widely published test vector).
        let mut out = [0u8; 3];
        mgf1_xor(HashAlg::Sha1, b"foo", &mut out);
        assert_eq!(out, [0x1a, 0xc9, 0x07]);
        let mut out = [0u8; 5];
        mgf1_xor(HashAlg::Sha1, b"bar", &mut out);
        assert_eq!(out, [0xbc, 0x0c, 0x65, 0x5e, 0x01]);
    }

    #[test]
    fn oaep_round_trips() {
        for hash in [HashAlg::Sha1, HashAlg::Sha256] {
            for k in [256usize, 384, 512] {
                for len in [0usize, 1, 32, k - 2 * hash.output_len() - 2] {
                    let msg: Vec<u8> = (0..len).map(|i| i as u8).collect();
                    let em = oaep_encode(hash, &msg, k);
                    assert_eq!(oaep_decode(hash, &em, k).unwrap().as_slice(), msg.as_slice());
                    // A token that strips the leading zero byte still works.
                    assert_eq!(oaep_decode(hash, &em[1..], k).unwrap().as_slice(), msg.as_slice());
                }
            }
        }
    }

    #[test]
    fn oaep_rejects_tampering() {
        let k = 256;
        for hash in [HashAlg::Sha1, HashAlg::Sha256] {
            let em = oaep_encode(hash, b"secret", k);
            for pos in [0usize, 1, hash.output_len(), hash.output_len() + 1, 2 * hash.output_len() + 1, k - 7, k - 1] {
                let mut bad = em.clone();
                bad[pos] ^= 0x01;
                // Flipping a message byte yields a different (valid) message; everything else must fail.
                match oaep_decode(hash, &bad, k) {
                    Ok(m) => assert!(pos >= k - 6 && m.as_slice() != b"secret"),
                    Err(e) => assert!(matches!(e, VaultError::DecryptFailed)),
                }
            }
            // Wrong hash.
            let other = if hash == HashAlg::Sha1 { HashAlg::Sha256 } else { HashAlg::Sha1 };
            assert!(oaep_decode(other, &em, k).is_err());
            // Too long, all zeros, all ones, too small a modulus.
            assert!(oaep_decode(hash, &[0u8; 257], k).is_err());
            assert!(oaep_decode(hash, &[0u8; 256], k).is_err());
            assert!(oaep_decode(hash, &[0xffu8; 256], k).is_err());
            assert!(oaep_decode(hash, &[], 2 * hash.output_len() + 1).is_err());
        }
    }

    #[test]
    fn oaep_rejects_missing_separator() {
        // Build an EM whose DB has lHash then only zeros: no 0x01 separator.
        let hash = HashAlg::Sha256;
        let k = 256;
        let mut db = hash.digest(b"");
        db.resize(k - hash.output_len() - 1, 0);
        let mut seed = vec![7u8; hash.output_len()];
        mgf1_xor(hash, &seed, &mut db);
        mgf1_xor(hash, &db, &mut seed);
        let mut em = vec![0u8];
        em.extend_from_slice(&seed);
        em.extend_from_slice(&db);
        assert!(matches!(oaep_decode(hash, &em, k), Err(VaultError::DecryptFailed)));
    }

    #[test]
    fn pkcs1v15_round_trips_and_rejects() {
        let k = 256;
        for len in [0usize, 1, 48, k - 11] {
            let msg: Vec<u8> = (0..len).map(|i| (i as u8) | 1).collect();
            let em = pkcs1_encode(&msg, k);
            assert_eq!(pkcs1v15_decode(&em, k).unwrap().as_slice(), msg.as_slice());
            assert_eq!(pkcs1v15_decode(&em[1..], k).unwrap().as_slice(), msg.as_slice());
        }
        let em = pkcs1_encode(b"hello", k);
        let mut bad = em.clone();
        bad[1] = 1;
        assert!(pkcs1v15_decode(&bad, k).is_err());
        let mut bad = em.clone();
        bad[0] = 1;
        assert!(pkcs1v15_decode(&bad, k).is_err());
        // Separator too early: fewer than 8 padding bytes.
        let mut bad = em.clone();
        bad[9] = 0;
        assert!(pkcs1v15_decode(&bad, k).is_err());
        // Exactly 8 padding bytes is fine.
        let mut ok = vec![0u8, 2, 1, 1, 1, 1, 1, 1, 1, 1, 0];
        ok.resize(k, 0x55);
        assert_eq!(pkcs1v15_decode(&ok, k).unwrap().len(), k - 11);
        // No separator at all.
        let mut bad = vec![0u8, 2];
        bad.resize(k, 0x55);
        assert!(pkcs1v15_decode(&bad, k).is_err());
        assert!(pkcs1v15_decode(&[0u8; 300], k).is_err());
    }
}
