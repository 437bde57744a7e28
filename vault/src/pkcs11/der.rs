//! The little DER this backend needs: SubjectPublicKeyInfo from token attributes, and the EC point wrapping.
//! Hand-written because the shapes are fixed and tiny; `PublicKey::from_spki` checks the result in every test.

/// DER of the OID 1.2.840.10045.3.1.7 (P-256), as CKA_EC_PARAMS holds it.
pub(crate) const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of the OID 1.3.132.0.34 (P-384).
pub(crate) const P384_PARAMS: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// Content bytes of the OID 1.2.840.113549.1.1.1 (rsaEncryption).
pub(crate) const RSA_ENCRYPTION_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const EC_PUBLIC_KEY_OID: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];

pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// A non-negative INTEGER from big-endian bytes (leading zeros dropped, a zero added before a high bit).
pub(crate) fn uint(bytes: &[u8]) -> Vec<u8> {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let mut content = Vec::with_capacity(bytes.len() - first + 1);
    if bytes.get(first).is_none_or(|&b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(&bytes[first..]);
    tlv(0x02, &content)
}

fn bit_string(content: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(content.len() + 1);
    body.push(0);
    body.extend_from_slice(content);
    tlv(0x03, &body)
}

/// SubjectPublicKeyInfo of an RSA key from CKA_MODULUS and CKA_PUBLIC_EXPONENT.
pub(crate) fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    let mut alg = tlv(0x06, RSA_ENCRYPTION_OID);
    alg.extend_from_slice(&[0x05, 0x00]);
    let mut key = uint(modulus);
    key.extend_from_slice(&uint(exponent));
    let mut body = tlv(0x30, &alg);
    body.extend_from_slice(&bit_string(&tlv(0x30, &key)));
    tlv(0x30, &body)
}

/// SubjectPublicKeyInfo of an EC key from CKA_EC_PARAMS (a named-curve OID) and the raw uncompressed point.
pub(crate) fn ec_spki(params: &[u8], point: &[u8]) -> Vec<u8> {
    let mut alg = tlv(0x06, EC_PUBLIC_KEY_OID);
    alg.extend_from_slice(params);
    let mut body = tlv(0x30, &alg);
    body.extend_from_slice(&bit_string(point));
    tlv(0x30, &body)
}

/// The raw uncompressed point from CKA_EC_POINT, which PKCS#11 says is a DER OCTET STRING but some modules give raw.
pub(crate) fn unwrap_ec_point(value: &[u8], field_len: usize) -> Option<Vec<u8>> {
    let point_len = 2 * field_len + 1;
    if value.len() == point_len && value[0] == 0x04 {
        return Some(value.to_vec());
    }
    let inner = match value {
        [0x04, len, rest @ ..] if (*len as usize) < 0x80 => (rest.len() == *len as usize).then_some(rest)?,
        [0x04, 0x81, len, rest @ ..] => (rest.len() == *len as usize).then_some(rest)?,
        _ => return None,
    };
    (inner.len() == point_len && inner[0] == 0x04).then(|| inner.to_vec())
}

/// Bit length of a big-endian unsigned integer.
pub(crate) fn bit_len(bytes: &[u8]) -> u32 {
    match bytes.iter().position(|&b| b != 0) {
        Some(i) => ((bytes.len() - i) * 8) as u32 - bytes[i].leading_zeros(),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_lengths() {
        assert_eq!(uint(&[0, 0, 1]), vec![2, 1, 1]);
        assert_eq!(uint(&[0x80]), vec![2, 2, 0, 0x80]);
        assert_eq!(uint(&[]), vec![2, 1, 0]);
        assert_eq!(tlv(4, &[0u8; 200])[..3], [4, 0x81, 200]);
        assert_eq!(tlv(4, &[0u8; 300])[..4], [4, 0x82, 1, 44]);
        assert_eq!(bit_len(&[0, 0x01, 0]), 9);
        assert_eq!(bit_len(&[0x80, 0]), 16);
    }

    #[test]
    fn ec_points() {
        let mut raw = vec![4u8];
        raw.extend_from_slice(&[9u8; 64]);
        assert_eq!(unwrap_ec_point(&raw, 32), Some(raw.clone()));
        let wrapped = tlv(0x04, &raw);
        assert_eq!(unwrap_ec_point(&wrapped, 32), Some(raw.clone()));
        let mut raw384 = vec![4u8];
        raw384.extend_from_slice(&[9u8; 96]);
        assert_eq!(unwrap_ec_point(&tlv(0x04, &raw384), 48), Some(raw384));
        assert_eq!(unwrap_ec_point(&wrapped[..10], 32), None);
        assert_eq!(unwrap_ec_point(&wrapped, 48), None);
    }

    #[test]
    fn spki_parses() {
        let key = crate::soft::SoftKey::from_pkcs8(
            crate::soft::generate_pkcs8(crate::KeyAlgorithm::EcP256).unwrap(),
            vec![1],
            "k".into(),
            true,
            Default::default(),
        )
        .unwrap();
        let pk = crate::PublicKey::from_spki(&crate::VaultKey::info(&key).spki_der).unwrap();
        assert_eq!(ec_spki(P256_PARAMS, pk.raw_bytes()), crate::VaultKey::info(&key).spki_der);
    }
}
