//! Sealed private keys: CMS `EnvelopedData` (RFC 5652 §6) to one RSA recipient.
//!
//! - one `KeyTransRecipientInfo` (version 2): the recipient named by subject key identifier
//!   ([`super::envelope::key_identifier`] of its SubjectPublicKeyInfo), key encryption RSAES-OAEP (RFC 4055) with
//!   SHA-256 and MGF1-SHA-256, or with SHA-1 and MGF1-SHA-1 for recipients that ask for it ([`OaepHash`]), over a
//!   fresh 32-byte content-encryption key;
//! - content encryption AES-256 key wrap with padding (RFC 5649, `id-aes256-wrap-pad`, no parameters) over the
//!   PKCS#8 `PrivateKeyInfo` DER of the key. Key wrap carries its own integrity check, so a changed byte is found
//!   when the key is unwrapped.
//!
//! Why these: a PKCS#11 token imports such a key without it ever being in clear outside the token, with two
//! `C_UnwrapKey` calls: `CKM_RSA_PKCS_OAEP` turns the encrypted key into an AES session key, `CKM_AES_KEY_WRAP_PAD`
//! with that key turns the wrapped PKCS#8 into a private key object. SoftHSM2 2.6 refuses `CKM_AES_CBC_PAD` for
//! unwrapping (`CKR_MECHANISM_INVALID`) and OAEP with any hash but SHA-1 (`CKR_ARGUMENTS_BAD`), so AES-CBC is not
//! used, and a token's request may ask for OAEP-SHA-1 (still sound: OAEP needs no collision resistance).
//!
//! Sealing and opening take and give key bytes, so both are crate-private: they run in vaultd only.

use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{
    EncryptedContentInfo, EnvelopedData, KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo, RecipientInfos,
};
use const_oid::db::{rfc5911, rfc5912};
use const_oid::ObjectIdentifier;
use der::asn1::OctetString;
use der::{Any, Decode, Encode};
use serde::{Deserialize, Serialize};
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
/// DER of RSAES-OAEP-params with every field at its default (SHA-1, MGF1-SHA-1, empty label): an empty SEQUENCE.
const OAEP_SHA1_PARAMS: [u8; 2] = [0x30, 0x00];
/// `id-aes256-wrap-pad` (RFC 5649 §3). (invariant: `new_unwrap` is evaluated at compile time.)
pub const ID_AES256_WRAP_PAD: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.48");

const WHAT: &str = "sealed key";

/// The OAEP hash (and MGF1 hash) used to encrypt the content key to a recipient.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OaepHash {
    /// SHA-256 with MGF1-SHA-256: the default.
    #[default]
    Sha256,
    /// SHA-1 with MGF1-SHA-1: for tokens whose `C_UnwrapKey` does no other OAEP (SoftHSM2 2.6).
    Sha1,
}

impl OaepHash {
    fn decrypt_alg(self) -> DecryptAlg {
        match self {
            OaepHash::Sha256 => DecryptAlg::RsaOaepSha256,
            OaepHash::Sha1 => DecryptAlg::RsaOaepSha1,
        }
    }

    fn params(self) -> &'static [u8] {
        match self {
            OaepHash::Sha256 => &OAEP_SHA256_PARAMS,
            OaepHash::Sha1 => &OAEP_SHA1_PARAMS,
        }
    }

    /// True for the default, so that JSON and CBOR leave it out.
    pub fn is_default(&self) -> bool {
        *self == OaepHash::Sha256
    }
}

/// Whom a key is sealed to: an RSA public key and the OAEP hash it can unwrap with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// DER SubjectPublicKeyInfo of the RSA key.
    #[serde(with = "serde_bytes")]
    pub spki: Vec<u8>,
    /// OAEP hash.
    #[serde(default, skip_serializing_if = "OaepHash::is_default")]
    pub oaep: OaepHash,
}

impl Recipient {
    /// A recipient with the default OAEP hash (SHA-256).
    pub fn new(spki: Vec<u8>) -> Self {
        Recipient { spki, oaep: OaepHash::Sha256 }
    }
}

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
    /// The OAEP hash of `encrypted_key`.
    pub oaep: OaepHash,
    /// RSA-OAEP encryption of the AES-256 key.
    pub encrypted_key: Vec<u8>,
    /// AES-256-KWP wrapping of the PKCS#8 key.
    pub wrapped: Vec<u8>,
}

/// Seals `pkcs8` to `recipient`.
pub(crate) fn seal(pkcs8: &[u8], recipient: &Recipient) -> Result<Vec<u8>> {
    use aws_lc_rs::key_wrap::{AesKek, KeyWrapPadded, AES_256};
    let public = PublicKey::from_spki(&recipient.spki)?;
    if !public.algorithm().is_rsa() {
        return Err(ProvisionError::Invalid { what: WHAT, why: "the recipient key must be RSA".into() });
    }
    let mut cek = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(cek.as_mut()).map_err(|_| VaultError::Crypto("no randomness".into()))?;
    let encrypted_key = public.encrypt(recipient.oaep.decrypt_alg(), cek.as_ref())?;
    let crypto = |_| ProvisionError::Vault(VaultError::Crypto("AES-256 key wrap".into()));
    let kek = AesKek::new(&AES_256, cek.as_ref()).map_err(crypto)?;
    let mut out = vec![0u8; pkcs8.len() + 16];
    let wrapped = kek.wrap_with_padding(pkcs8, &mut out).map_err(crypto)?.to_vec();
    let ktri = KeyTransRecipientInfo {
        version: CmsVersion::V2,
        rid: RecipientIdentifier::SubjectKeyIdentifier(SubjectKeyIdentifier(
            OctetString::new(key_identifier(&recipient.spki)).map_err(encode_err)?,
        )),
        key_enc_alg: AlgorithmIdentifierOwned {
            oid: rfc5912::ID_RSAES_OAEP,
            parameters: Some(Any::from_der(recipient.oaep.params()).map_err(encode_err)?),
        },
        enc_key: OctetString::new(encrypted_key).map_err(encode_err)?,
    };
    let ed = EnvelopedData {
        version: CmsVersion::V2,
        originator_info: None,
        recip_infos: RecipientInfos::try_from(vec![RecipientInfo::Ktri(ktri)]).map_err(encode_err)?,
        encrypted_content: EncryptedContentInfo {
            content_type: rfc5911::ID_DATA,
            content_enc_alg: AlgorithmIdentifierOwned { oid: ID_AES256_WRAP_PAD, parameters: None },
            encrypted_content: Some(OctetString::new(wrapped).map_err(encode_err)?),
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
    let params = ktri.key_enc_alg.parameters.as_ref().and_then(|p| p.to_der().ok());
    let oaep = [OaepHash::Sha256, OaepHash::Sha1].into_iter().find(|h| params.as_deref() == Some(h.params()));
    let (true, Some(oaep)) = (ktri.key_enc_alg.oid == rfc5912::ID_RSAES_OAEP, oaep) else {
        return Err(malformed("the key encryption is not RSAES-OAEP with SHA-256 or SHA-1"));
    };
    let enc = &ed.encrypted_content;
    if enc.content_type != rfc5911::ID_DATA
        || enc.content_enc_alg.oid != ID_AES256_WRAP_PAD
        || enc.content_enc_alg.parameters.is_some()
    {
        return Err(malformed("the content encryption is not AES-256 key wrap with padding over data"));
    }
    let wrapped = enc.encrypted_content.as_ref().ok_or_else(|| malformed("no encrypted content"))?;
    Ok(SealedParts {
        recipient: ski.0.as_bytes().to_vec(),
        oaep,
        encrypted_key: ktri.enc_key.as_bytes().to_vec(),
        wrapped: wrapped.as_bytes().to_vec(),
    })
}

/// Checks that a parsed sealed key is for `transport_spki`.
pub(crate) fn check_recipient(parts: &SealedParts, transport_spki: &[u8]) -> Result<()> {
    if parts.recipient != key_identifier(transport_spki) {
        return Err(ProvisionError::WrongSigner {
            what: WHAT,
            expected: "this vault's transport key",
            why: "it is sealed to another key".into(),
        });
    }
    Ok(())
}

/// Opens a sealed key with `transport` (which decrypts inside its vault) and returns the PKCS#8 DER.
pub(crate) fn open(der: &[u8], transport: &dyn VaultKey) -> Result<Zeroizing<Vec<u8>>> {
    use aws_lc_rs::key_wrap::{AesKek, KeyWrapPadded, AES_256};
    let parts = parse(der)?;
    check_recipient(&parts, &transport.info().spki_der)?;
    let cek = transport.decrypt(parts.oaep.decrypt_alg(), &parts.encrypted_key)?;
    let failed = |_| ProvisionError::Vault(VaultError::DecryptFailed);
    let kek = AesKek::new(&AES_256, &cek).map_err(failed)?;
    let mut out = Zeroizing::new(vec![0u8; parts.wrapped.len()]);
    let n = kek.unwrap_with_padding(&parts.wrapped, &mut out).map_err(failed)?.len();
    out.truncate(n);
    Ok(out)
}

/// The subject key identifier of the key a sealed key is for (to match it with a dongle's transport key).
pub fn recipient(der: &[u8]) -> Result<Vec<u8>> {
    Ok(parse(der)?.recipient)
}
