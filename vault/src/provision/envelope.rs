//! The signed envelope shared by the three files: CMS `SignedData` (RFC 5652 §5) with one signer, signed
//! attributes (content-type, message-digest) and the JSON document as encapsulated content.
//!
//! Signing goes through [`VaultKey`], so the signature is made inside the vault. Verification is strict: every
//! field of the envelope must be what [`sign`] writes, so one changed byte anywhere in a file is refused, and the
//! error names what was changed.

use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use const_oid::db::{rfc5911, rfc5912};
use const_oid::ObjectIdentifier;
use der::asn1::{OctetString, SetOfVec};
use der::{Any, Decode, Encode, Tag};
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use x509_cert::Certificate;

use super::{ProvisionError, Result};
use crate::key::{HashAlg, KeyAlgorithm, SignAlg, VaultKey};
use crate::pubkey::PublicKey;

/// Which of the three files an envelope carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A device's request.
    Request,
    /// The central's update.
    Update,
    /// A device's receipt.
    Receipt,
}

impl Kind {
    /// The eContentType.
    pub fn oid(self) -> ObjectIdentifier {
        match self {
            Kind::Request => super::oid::REQUEST,
            Kind::Update => super::oid::UPDATE,
            Kind::Receipt => super::oid::RECEIPT,
        }
    }

    /// Name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Update => "update",
            Kind::Receipt => "receipt",
        }
    }

    fn from_oid(oid: &ObjectIdentifier) -> Option<Kind> {
        [Kind::Request, Kind::Update, Kind::Receipt].into_iter().find(|k| &k.oid() == oid)
    }
}

/// Signature scheme of a key in our envelopes: PKCS#1 v1.5 SHA-256 for RSA, ECDSA with the curve's hash for EC.
fn scheme(alg: KeyAlgorithm) -> (SignAlg, HashAlg, ObjectIdentifier, ObjectIdentifier, bool) {
    match alg {
        KeyAlgorithm::Rsa { .. } => {
            (SignAlg::RsaPkcs1Sha256, HashAlg::Sha256, rfc5912::ID_SHA_256, rfc5912::SHA_256_WITH_RSA_ENCRYPTION, true)
        }
        KeyAlgorithm::EcP256 => {
            (SignAlg::EcdsaP256Sha256, HashAlg::Sha256, rfc5912::ID_SHA_256, rfc5912::ECDSA_WITH_SHA_256, false)
        }
        KeyAlgorithm::EcP384 => {
            (SignAlg::EcdsaP384Sha384, HashAlg::Sha384, rfc5912::ID_SHA_384, rfc5912::ECDSA_WITH_SHA_384, false)
        }
    }
}

/// The subject key identifier we use for keys without a certificate: SHA-256 over the DER SubjectPublicKeyInfo
/// (RFC 7093 §2, method 4).
pub fn key_identifier(spki_der: &[u8]) -> Vec<u8> {
    HashAlg::Sha256.digest(spki_der)
}

fn malformed(kind: Kind, e: impl std::fmt::Display) -> ProvisionError {
    ProvisionError::Malformed { what: kind.name(), why: e.to_string() }
}

fn envelope_err(kind: Kind, why: impl Into<String>) -> ProvisionError {
    ProvisionError::Envelope { what: kind.name(), why: why.into() }
}

fn encode_err(e: der::Error) -> ProvisionError {
    ProvisionError::Vault(crate::VaultError::Crypto(format!("DER encoding: {e}")))
}

fn alg_id(oid: ObjectIdentifier, null_params: bool) -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned { oid, parameters: null_params.then(Any::null) }
}

fn signed_attrs(kind: Kind, digest: &[u8]) -> Result<SetOfVec<Attribute>> {
    let mut ct = SetOfVec::new();
    ct.insert(Any::encode_from(&kind.oid()).map_err(encode_err)?).map_err(encode_err)?;
    let mut md = SetOfVec::new();
    md.insert(Any::new(Tag::OctetString, digest.to_vec()).map_err(encode_err)?).map_err(encode_err)?;
    let mut attrs = SetOfVec::new();
    attrs.insert(Attribute { oid: rfc5911::ID_CONTENT_TYPE, values: ct }).map_err(encode_err)?;
    attrs.insert(Attribute { oid: rfc5911::ID_MESSAGE_DIGEST, values: md }).map_err(encode_err)?;
    Ok(attrs)
}

/// Signs `content` as a `kind` file with `key`. With a non-empty `chain` (leaf first; the leaf must carry `key`'s
/// public key) the certificates travel in the envelope and the signer is named by issuer and serial; without one
/// the signer is named by [`key_identifier`].
pub fn sign(kind: Kind, content: &[u8], key: &dyn VaultKey, chain: &[Vec<u8>]) -> Result<Vec<u8>> {
    let info = key.info();
    let (sign_alg, hash, digest_oid, sig_oid, sig_null) = scheme(info.algorithm);
    let certs: Vec<Certificate> = chain
        .iter()
        .enumerate()
        .map(|(i, der)| {
            Certificate::from_der(der).map_err(|e| ProvisionError::Invalid {
                what: kind.name(),
                why: format!("signer certificate {i} does not parse: {e}"),
            })
        })
        .collect::<Result<_>>()?;
    let (sid, version) = match certs.first() {
        Some(leaf) => {
            let spki = leaf.tbs_certificate().subject_public_key_info().to_der().map_err(encode_err)?;
            if spki != info.spki_der {
                return Err(ProvisionError::Invalid {
                    what: kind.name(),
                    why: format!("the signer certificate does not carry the public key of {:?}", info.label),
                });
            }
            let tbs = leaf.tbs_certificate();
            let isn =
                IssuerAndSerialNumber { issuer: tbs.issuer().clone(), serial_number: tbs.serial_number().clone() };
            (SignerIdentifier::IssuerAndSerialNumber(isn), CmsVersion::V1)
        }
        None => {
            let ski = OctetString::new(key_identifier(&info.spki_der)).map_err(encode_err)?;
            (SignerIdentifier::SubjectKeyIdentifier(SubjectKeyIdentifier(ski)), CmsVersion::V3)
        }
    };
    let attrs = signed_attrs(kind, &hash.digest(content))?;
    let to_sign = attrs.to_der().map_err(encode_err)?;
    let signature = key.sign_der(sign_alg, &to_sign)?;
    let signer = SignerInfo {
        version,
        sid,
        digest_alg: alg_id(digest_oid, false),
        signed_attrs: Some(attrs),
        signature_algorithm: alg_id(sig_oid, sig_null),
        signature: OctetString::new(signature).map_err(encode_err)?,
        unsigned_attrs: None,
    };
    let mut digest_algorithms = SetOfVec::new();
    digest_algorithms.insert(alg_id(digest_oid, false)).map_err(encode_err)?;
    let certificates = if certs.is_empty() {
        None
    } else {
        Some(
            CertificateSet::try_from(certs.into_iter().map(CertificateChoices::Certificate).collect::<Vec<_>>())
                .map_err(encode_err)?,
        )
    };
    let econtent = Any::encode_from(&OctetString::new(content.to_vec()).map_err(encode_err)?).map_err(encode_err)?;
    let sd = SignedData {
        version: CmsVersion::V3,
        digest_algorithms,
        encap_content_info: EncapsulatedContentInfo { econtent_type: kind.oid(), econtent: Some(econtent) },
        certificates,
        crls: None,
        signer_infos: SignerInfos::try_from(vec![signer]).map_err(encode_err)?,
    };
    let ci = ContentInfo { content_type: rfc5911::ID_SIGNED_DATA, content: Any::encode_from(&sd).map_err(encode_err)? };
    ci.to_der().map_err(encode_err)
}

/// A parsed envelope whose signature is not checked yet: [`Opened::verify`] does that.
#[derive(Debug)]
pub struct Opened {
    kind: Kind,
    /// The encapsulated JSON document.
    pub content: Vec<u8>,
    /// DER certificates carried in the envelope (empty for requests and receipts).
    pub certificates: Vec<Vec<u8>>,
    signer: SignerInfo,
    digest_set: Vec<AlgorithmIdentifierOwned>,
}

/// Parses a `kind` file and checks everything about it that needs no key: the structure, the content type, the
/// one signer. The signature is checked by [`Opened::verify`].
pub fn open(der: &[u8], kind: Kind) -> Result<Opened> {
    let ci = ContentInfo::from_der(der).map_err(|e| malformed(kind, format!("not DER CMS: {e}")))?;
    if ci.content_type != rfc5911::ID_SIGNED_DATA {
        return Err(malformed(kind, format!("CMS content type {} is not SignedData", ci.content_type)));
    }
    let sd: SignedData = ci.content.decode_as().map_err(|e| malformed(kind, format!("SignedData: {e}")))?;
    let found = sd.encap_content_info.econtent_type;
    if found != kind.oid() {
        let name = Kind::from_oid(&found).map(|k| format!("{found} (a {} file)", k.name()));
        return Err(ProvisionError::WrongKind { expected: kind.name(), found: name.unwrap_or(found.to_string()) });
    }
    if sd.version != CmsVersion::V3 {
        return Err(envelope_err(kind, format!("SignedData version {:?}, ours is V3", sd.version)));
    }
    if sd.crls.is_some() {
        return Err(envelope_err(kind, "it carries revocation information"));
    }
    let econtent = sd.encap_content_info.econtent.ok_or_else(|| malformed(kind, "no encapsulated content"))?;
    let content: OctetString =
        econtent.decode_as().map_err(|e| malformed(kind, format!("encapsulated content: {e}")))?;
    let mut signers = sd.signer_infos.0.into_vec();
    if signers.len() != 1 {
        return Err(envelope_err(kind, format!("{} signers, ours have exactly one", signers.len())));
    }
    let signer = signers.remove(0);
    if signer.unsigned_attrs.is_some() {
        return Err(envelope_err(kind, "the signer has unsigned attributes"));
    }
    let mut certificates = Vec::new();
    for c in sd.certificates.map(|s| s.0.into_vec()).unwrap_or_default() {
        match c {
            CertificateChoices::Certificate(cert) => certificates.push(cert.to_der().map_err(encode_err)?),
            CertificateChoices::Other(_) => return Err(envelope_err(kind, "a certificate of another format")),
        }
    }
    Ok(Opened {
        kind,
        content: content.into_bytes().into_vec(),
        certificates,
        signer,
        digest_set: sd.digest_algorithms.into_vec(),
    })
}

impl Opened {
    /// Whether the signer is named by [`key_identifier`] of `spki_der` (requests and receipts).
    pub fn signer_is_key(&self, spki_der: &[u8]) -> bool {
        match &self.signer.sid {
            SignerIdentifier::SubjectKeyIdentifier(ski) => ski.0.as_bytes() == key_identifier(spki_der).as_slice(),
            SignerIdentifier::IssuerAndSerialNumber(_) => false,
        }
    }

    /// Whether the signer is named by issuer and serial of the DER certificate `cert`.
    pub fn signer_is_cert(&self, cert: &[u8]) -> bool {
        let Ok(cert) = Certificate::from_der(cert) else { return false };
        let tbs = cert.tbs_certificate();
        match &self.signer.sid {
            SignerIdentifier::IssuerAndSerialNumber(isn) => {
                &isn.issuer == tbs.issuer() && &isn.serial_number == tbs.serial_number()
            }
            SignerIdentifier::SubjectKeyIdentifier(_) => false,
        }
    }

    /// Checks the signed attributes against the content and the signature with the public key `spki_der`.
    pub fn verify(&self, spki_der: &[u8]) -> Result<()> {
        let kind = self.kind;
        let public = PublicKey::from_spki(spki_der)?;
        let (sign_alg, hash, digest_oid, sig_oid, sig_null) = scheme(public.algorithm());
        let expected_version = match self.signer.sid {
            SignerIdentifier::IssuerAndSerialNumber(_) => CmsVersion::V1,
            SignerIdentifier::SubjectKeyIdentifier(_) => CmsVersion::V3,
        };
        if self.signer.version != expected_version {
            return Err(envelope_err(kind, "the signer version does not fit its identifier"));
        }
        if self.signer.digest_alg != alg_id(digest_oid, false) || self.digest_set != [alg_id(digest_oid, false)] {
            return Err(envelope_err(kind, format!("digest algorithm is not {digest_oid}")));
        }
        if self.signer.signature_algorithm != alg_id(sig_oid, sig_null) {
            return Err(envelope_err(
                kind,
                format!("signature algorithm {} does not fit the signer's key", self.signer.signature_algorithm.oid),
            ));
        }
        let attrs = self.signer.signed_attrs.as_ref().ok_or_else(|| envelope_err(kind, "no signed attributes"))?;
        if attrs.len() != 2 {
            return Err(envelope_err(kind, format!("{} signed attributes, ours have 2", attrs.len())));
        }
        let digest = hash.digest(&self.content);
        let expected = signed_attrs(kind, &digest)?;
        for a in attrs.iter() {
            let mine = expected
                .iter()
                .find(|e| e.oid == a.oid)
                .ok_or_else(|| envelope_err(kind, format!("unexpected signed attribute {}", a.oid)))?;
            if a.values != mine.values {
                return Err(if a.oid == rfc5911::ID_MESSAGE_DIGEST {
                    ProvisionError::DigestMismatch { what: kind.name() }
                } else {
                    envelope_err(kind, "the signed content-type attribute differs from the content type")
                });
            }
        }
        let to_verify = attrs.to_der().map_err(encode_err)?;
        let mut sig = self.signer.signature.as_bytes().to_vec();
        if sign_alg.is_ecdsa() {
            let field = public.algorithm().signature_len() / 2;
            sig = crate::sig::ecdsa_der_to_raw(&sig, field)
                .map_err(|_| ProvisionError::BadSignature { what: kind.name() })?;
        }
        public.verify(sign_alg, &to_verify, &sig).map_err(|_| ProvisionError::BadSignature { what: kind.name() })
    }
}
