//! Signature encodings: OPC UA wants ECDSA as raw r||s, X.509 and TLS want the DER `ECDSA-Sig-Value`.
//! Backends produce raw; the adapters convert here.

use crate::error::{Result, VaultError};

/// Converts a raw r||s ECDSA signature (even length, r and s of equal size) to DER `SEQUENCE { r INTEGER, s INTEGER }`.
///
/// ```
/// let raw = [0u8; 63].iter().chain([1u8].iter()).chain([0x80u8; 64].iter()).copied().collect::<Vec<_>>();
/// let der = certvault::sig::ecdsa_raw_to_der(&raw).unwrap();
/// assert_eq!(certvault::sig::ecdsa_der_to_raw(&der, 64).unwrap(), raw);
/// ```
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) || raw.len() > 132 {
        return Err(VaultError::InvalidInput(format!("raw ECDSA signature of {} bytes", raw.len())));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let r = der_uint(r);
    let s = der_uint(s);
    let body_len = r.len() + s.len();
    let mut out = Vec::with_capacity(body_len + 3);
    out.push(0x30);
    push_len(&mut out, body_len);
    out.extend_from_slice(&r);
    out.extend_from_slice(&s);
    Ok(out)
}

/// Converts a DER ECDSA signature to raw r||s with each half `field_len` bytes (32 for P-256, 48 for P-384).
pub fn ecdsa_der_to_raw(der: &[u8], field_len: usize) -> Result<Vec<u8>> {
    let bad = || VaultError::InvalidInput("malformed DER ECDSA signature".into());
    let (tag, body, rest) = read_tlv(der).ok_or_else(bad)?;
    if tag != 0x30 || !rest.is_empty() {
        return Err(bad());
    }
    let mut out = vec![0u8; field_len * 2];
    let mut cur = body;
    for half in 0..2 {
        let (tag, int, rest) = read_tlv(cur).ok_or_else(bad)?;
        if tag != 0x02 || int.is_empty() {
            return Err(bad());
        }
        let int = if int.len() > 1 && int[0] == 0 { &int[1..] } else { int };
        if int.len() > field_len {
            return Err(bad());
        }
        let end = (half + 1) * field_len;
        out[end - int.len()..end].copy_from_slice(int);
        cur = rest;
    }
    if !cur.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len().saturating_sub(1));
    let trimmed = &bytes[first.min(bytes.len())..];
    let trimmed = if trimmed.is_empty() { &[0u8][..] } else { trimmed };
    let mut out = vec![0x02];
    let pad = trimmed[0] & 0x80 != 0;
    push_len(&mut out, trimmed.len() + usize::from(pad));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(trimmed);
    out
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    }
}

/// Reads one DER TLV with a short or one/two-byte long length. Returns (tag, value, rest).
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&l0, rest) = rest.split_first()?;
    let (len, rest) = match l0 {
        0..=0x7f => (l0 as usize, rest),
        0x81 => (*rest.first()? as usize, rest.get(1..)?),
        0x82 => ((*rest.first()? as usize) << 8 | *rest.get(1)? as usize, rest.get(2..)?),
        _ => return None,
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_high_bit_and_leading_zeros() {
        for (r0, s0) in [(0x00u8, 0x7fu8), (0x80, 0xff), (0x01, 0x00)] {
            let mut raw = vec![0u8; 96];
            raw[0] = r0;
            raw[47] = 9;
            raw[48] = s0;
            raw[95] = 3;
            let der = ecdsa_raw_to_der(&raw).unwrap();
            assert_eq!(ecdsa_der_to_raw(&der, 48).unwrap(), raw);
        }
    }

    #[test]
    fn rejects_garbage() {
        assert!(ecdsa_der_to_raw(&[0x30, 0x05, 0x02, 0x01], 32).is_err());
        assert!(ecdsa_der_to_raw(&[], 32).is_err());
        assert!(ecdsa_raw_to_der(&[1, 2, 3]).is_err());
        // An integer longer than the field must not be truncated silently.
        let der = ecdsa_raw_to_der(&[0xffu8; 66]).unwrap();
        assert!(ecdsa_der_to_raw(&der, 32).is_err());
    }
}
