//! Sealed private keys: CMS `EnvelopedData` (RFC 5652 §6) to one RSA recipient.
//!
//! - one `KeyTransRecipientInfo` (version 2): the recipient named by subject key identifier
//!   ([`super::envelope::key_identifier`] of its SubjectPublicKeyInfo), key encryption RSAES-OAEP with SHA-256 and
//!   MGF1-SHA-256 (RFC 4055), over a fresh 32-byte content-encryption key;
//! - content encryption AES-256-CBC with PKCS#7 padding (RFC 3565), a random IV as parameter, over the PKCS#8
//!   `PrivateKeyInfo` DER of the key.
//!
//! This is what a PKCS#11 token can import without the key ever being in clear outside it: `C_UnwrapKey` with
//! `CKM_RSA_PKCS_OAEP` (SHA-256) turns the encrypted key into an AES session key, and `C_UnwrapKey` with
//! `CKM_AES_CBC_PAD` and that key turns the encrypted content into a private key object. `openssl cms -decrypt`
//! opens it too.
//!
//! Sealing and opening take and give key bytes, so both are crate-private: they run in vaultd only.

use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{
    EncryptedContentInfo, EnvelopedData, KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo, RecipientInfos,
};
use const_oid::db::{rfc5911, rfc5912};
use der::asn1::OctetString;
use der::{Any, Decode, Encode};
use spki::AlgorithmIdentifierOwned;
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use zeroize::Zeroizing;

use super::envelope::key_identifier;
use super::{ProvisionError, Result};
use crate::key::{DecryptAlg, VaultKey};
use crate::pubkey::PublicKey;
use crate::VaultError;

/// DER of RSAES-OAEP-params { sha256, mgf1SHA256, pSpecifiedEmpty (default, omitted) }.
const OAEP_SHA256_PARAMS: [u8; 49] = [
    0x30, 0x2f, 0xa0, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00,
    0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08, 0x30, 0x0d, 0x06, 0x09,
    0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00,
];

const WHAT: &str = "sealed key";

fn malformed(why: impl std::fmt::Display) -> ProvisionError {
    ProvisionError::Malformed { what: WHAT, why: why.to_string() }
}

fn encode_err(e: der::Error) -> ProvisionError {
    ProvisionError::Vault(VaultError::Crypto(format!("DER encoding: {e}")))
}

/// The parts of a sealed key, as a PKCS#11 token needs them for two `C_UnwrapKey` calls.
#[derive(Debug, Clone)]
pub(crate) struct SealedParts {
    /// Subject key identifier of the recipient.
    pub recipient: Vec<u8>,
    /// RSA-OAEP(SHA-256) encryption of the AES-256 key.
    pub encrypted_key: Vec<u8>,
    /// AES-CBC IV.
    pub iv: [u8; 16],
    /// AES-256-CBC-PAD encryption of the PKCS#8 key.
    pub ciphertext: Vec<u8>,
}

/// Seals `pkcs8` to the RSA public key `recipient_spki`.
pub(crate) fn seal(pkcs8: &[u8], recipient_spki: &[u8]) -> Result<Vec<u8>> {
    use aws_lc_rs::cipher::{PaddedBlockEncryptingKey, UnboundCipherKey, AES_256};
    let recipient = PublicKey::from_spki(recipient_spki)?;
    if !recipient.algorithm().is_rsa() {
        return Err(ProvisionError::Invalid { what: WHAT, why: "the recipient key must be RSA".into() });
    }
    let mut cek = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(cek.as_mut()).map_err(|_| VaultError::Crypto("no randomness".into()))?;
    let encrypted_key = recipient.encrypt(DecryptAlg::RsaOaepSha256, cek.as_ref())?;
    let crypto = |_| ProvisionError::Vault(VaultError::Crypto("AES-256-CBC encryption".into()));
    let key = PaddedBlockEncryptingKey::cbc_pkcs7(UnboundCipherKey::new(&AES_256, cek.as_ref()).map_err(crypto)?)
        .map_err(crypto)?;
    let mut buf = pkcs8.to_vec();
    let ctx = key.encrypt(&mut buf).map_err(crypto)?;
    let iv: &[u8] = match &ctx {
        aws_lc_rs::cipher::DecryptionContext::Iv128(iv) => iv.as_ref(),
        _ => return Err(ProvisionError::Vault(VaultError::Crypto("AES-CBC gave no IV".into()))),
    };
    let ktri = KeyTransRecipientInfo {
        version: CmsVersion::V2,
        rid: RecipientIdentifier::SubjectKeyIdentifier(SubjectKeyIdentifier(
            OctetString::new(key_identifier(recipient_spki)).map_err(encode_err)?,
        )),
        key_enc_alg: AlgorithmIdentifierOwned {
            oid: rfc5912::ID_RSAES_OAEP,
            parameters: Some(Any::from_der(&OAEP_SHA256_PARAMS).map_err(encode_err)?),
        },
        enc_key: OctetString::new(encrypted_key).map_err(encode_err)?,
    };
    let ed = EnvelopedData {
        version: CmsVersion::V2,
        originator_info: None,
        recip_infos: RecipientInfos::try_from(vec![RecipientInfo::Ktri(ktri)]).map_err(encode_err)?,
        encrypted_content: EncryptedContentInfo {
            content_type: rfc5911::ID_DATA,
            content_enc_alg: AlgorithmIdentifierOwned {
                oid: rfc5911::ID_AES_256_CBC,
                parameters: Some(
                    Any::encode_from(&OctetString::new(iv.to_vec()).map_err(encode_err)?).map_err(encode_err)?,
                ),
            },
            encrypted_content: Some(OctetString::new(buf).map_err(encode_err)?),
        },
        unprotected_attrs: None,
    };
    let ci =
        ContentInfo { content_type: rfc5911::ID_ENVELOPED_DATA, content: Any::encode_from(&ed).map_err(encode_err)? };
    ci.to_der().map_err(encode_err)
}

/// Parses a sealed key and checks that it is in the one form we accept.
pub(crate) fn parse(der: &[u8]) -> Result<SealedParts> {
    let ci = ContentInfo::from_der(der).map_err(|e| malformed(format!("not DER CMS: {e}")))?;
    if ci.content_type != rfc5911::ID_ENVELOPED_DATA {
        return Err(malformed(format!("CMS content type {} is not EnvelopedData", ci.content_type)));
    }
    let ed: EnvelopedData = ci.content.decode_as().map_err(|e| malformed(format!("EnvelopedData: {e}")))?;
    let recips = ed.recip_infos.0.into_vec();
    let [RecipientInfo::Ktri(ktri)] = recips.as_slice() else {
        return Err(malformed("expected exactly one key-transport recipient"));
    };
    if ed.version != CmsVersion::V2 || ktri.version != CmsVersion::V2 || ed.originator_info.is_some() {
        return Err(malformed("not certvault's EnvelopedData form (version 2, no originator info)"));
    }
    if ed.unprotected_attrs.is_some() {
        return Err(malformed("unexpected unprotected attributes"));
    }
    let RecipientIdentifier::SubjectKeyIdentifier(ski) = &ktri.rid else {
        return Err(malformed("the recipient is not named by subject key identifier"));
    };
    let params_ok =
        ktri.key_enc_alg.parameters.as_ref().and_then(|p| p.to_der().ok()).as_deref() == Some(&OAEP_SHA256_PARAMS[..]);
    if ktri.key_enc_alg.oid != rfc5912::ID_RSAES_OAEP || !params_ok {
        return Err(malformed("the key encryption is not RSAES-OAEP with SHA-256"));
    }
    let enc = &ed.encrypted_content;
    if enc.content_type != rfc5911::ID_DATA || enc.content_enc_alg.oid != rfc5911::ID_AES_256_CBC {
        return Err(malformed("the content encryption is not AES-256-CBC over data"));
    }
    let iv: OctetString = enc
        .content_enc_alg
        .parameters
        .as_ref()
        .ok_or_else(|| malformed("AES-CBC without IV"))?
        .decode_as()
        .map_err(|e| malformed(format!("AES-CBC IV: {e}")))?;
    let iv: [u8; 16] = iv.as_bytes().try_into().map_err(|_| malformed("the AES-CBC IV is not 16 bytes"))?;
    let ciphertext = enc.encrypted_content.as_ref().ok_or_else(|| malformed("no encrypted content"))?;
    Ok(SealedParts {
        recipient: ski.0.as_bytes().to_vec(),
        encrypted_key: ktri.enc_key.as_bytes().to_vec(),
        iv,
        ciphertext: ciphertext.as_bytes().to_vec(),
    })
}

/// Opens a sealed key with `transport` (which decrypts inside its vault) and returns the PKCS#8 DER.
pub(crate) fn open(der: &[u8], transport: &dyn VaultKey) -> Result<Zeroizing<Vec<u8>>> {
    use aws_lc_rs::cipher::{DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey, AES_256};
    let parts = parse(der)?;
    if parts.recipient != key_identifier(&transport.info().spki_der) {
        return Err(ProvisionError::WrongSigner {
            what: WHAT,
            expected: "this vault's transport key",
            why: "it is sealed to another key".into(),
        });
    }
    let cek = transport.decrypt(DecryptAlg::RsaOaepSha256, &parts.encrypted_key)?;
    if cek.len() != 32 {
        return Err(ProvisionError::Vault(VaultError::DecryptFailed));
    }
    let failed = |_| ProvisionError::Vault(VaultError::DecryptFailed);
    let key =
        PaddedBlockDecryptingKey::cbc_pkcs7(UnboundCipherKey::new(&AES_256, &cek).map_err(failed)?).map_err(failed)?;
    let mut buf = Zeroizing::new(parts.ciphertext);
    let n = key.decrypt(&mut buf, DecryptionContext::Iv128(parts.iv.into())).map_err(failed)?.len();
    buf.truncate(n);
    Ok(buf)
}

/// The subject key identifier of the key a sealed key is for (to match it with a dongle's transport key).
pub fn recipient(der: &[u8]) -> Result<Vec<u8>> {
    Ok(parse(der)?.recipient)
}
