//! Owned views of X.509 certificates and CRLs: parsed once when a file is loaded, so validation does not re-parse the
//! trust list on every OpenSecureChannel.

use std::net::IpAddr;
use std::ops::Range;
use std::sync::Arc;

use certvault::{HashAlg, KeyAlgorithm, PublicKey};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::x509::{AlgorithmIdentifier, X509Name};

use super::sigalg::CertSigAlg;

/// keyUsage bits (RFC 5280 §4.2.1.3) this stack looks at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyUsageBits {
    /// digitalSignature.
    pub digital_signature: bool,
    /// nonRepudiation (contentCommitment).
    pub non_repudiation: bool,
    /// keyEncipherment.
    pub key_encipherment: bool,
    /// dataEncipherment.
    pub data_encipherment: bool,
    /// keyCertSign.
    pub key_cert_sign: bool,
    /// cRLSign.
    pub crl_sign: bool,
}

/// extendedKeyUsage purposes this stack looks at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtKeyUsage {
    /// anyExtendedKeyUsage.
    pub any: bool,
    /// id-kp-serverAuth.
    pub server_auth: bool,
    /// id-kp-clientAuth.
    pub client_auth: bool,
}

/// A parsed certificate. Cheap to clone (the DER is shared).
#[derive(Clone, Debug)]
pub struct Cert {
    der: Arc<[u8]>,
    tbs: Range<usize>,
    pub(crate) thumbprint: [u8; 20],
    pub(crate) subject_raw: Vec<u8>,
    pub(crate) issuer_raw: Vec<u8>,
    pub(crate) subject: String,
    pub(crate) issuer: String,
    pub(crate) common_name: Option<String>,
    pub(crate) serial: Vec<u8>,
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
    pub(crate) not_before_text: String,
    pub(crate) not_after_text: String,
    pub(crate) spki: Vec<u8>,
    /// None for key types certvault cannot use (the policy check refuses them).
    pub(crate) key: Option<KeyAlgorithm>,
    pub(crate) sig_alg: CertSigAlg,
    pub(crate) signature: Vec<u8>,
    pub(crate) is_ca: bool,
    pub(crate) path_len: Option<u32>,
    /// None when the certificate has no keyUsage extension.
    pub(crate) key_usage: Option<KeyUsageBits>,
    /// None when the certificate has no extendedKeyUsage extension.
    pub(crate) ext_key_usage: Option<ExtKeyUsage>,
    pub(crate) uris: Vec<String>,
    pub(crate) dns_names: Vec<String>,
    pub(crate) ips: Vec<IpAddr>,
    pub(crate) subject_key_id: Option<Vec<u8>>,
    pub(crate) authority_key_id: Option<Vec<u8>>,
}

impl Cert {
    /// Parses one DER certificate. Trailing bytes are refused: a chain must be split first ([`split_chain`]).
    pub fn from_der(der: &[u8]) -> Result<Cert, String> {
        let (rest, x) = X509Certificate::from_der(der).map_err(|e| format!("not a DER X.509 certificate: {e}"))?;
        if !rest.is_empty() {
            return Err(format!("{} trailing bytes after the certificate", rest.len()));
        }
        let tbs_bytes = x.tbs_certificate.as_ref();
        let tbs = subslice_range(der, tbs_bytes).ok_or("TBSCertificate is not inside the certificate")?;
        let spki = x.public_key().raw.to_vec();
        let key = PublicKey::from_spki(&spki).ok().map(|k| k.algorithm());
        let mut cert = Cert {
            der: Arc::from(der),
            tbs,
            thumbprint: sha1(der),
            subject_raw: x.subject().as_raw().to_vec(),
            issuer_raw: x.issuer().as_raw().to_vec(),
            subject: x.subject().to_string(),
            issuer: x.issuer().to_string(),
            common_name: common_name(x.subject()),
            serial: strip_zeros(x.raw_serial()).to_vec(),
            not_before: x.validity().not_before.timestamp(),
            not_after: x.validity().not_after.timestamp(),
            not_before_text: x.validity().not_before.to_string(),
            not_after_text: x.validity().not_after.to_string(),
            spki,
            key,
            sig_alg: CertSigAlg::from_identifier(&x.signature_algorithm),
            signature: x.signature_value.data.to_vec(),
            is_ca: false,
            path_len: None,
            key_usage: None,
            ext_key_usage: None,
            uris: Vec::new(),
            dns_names: Vec::new(),
            ips: Vec::new(),
            subject_key_id: None,
            authority_key_id: None,
        };
        if !same_algorithm(&x.signature_algorithm, &x.tbs_certificate.signature) {
            return Err("signatureAlgorithm differs from the TBSCertificate's signature field".into());
        }
        if x.version().0 != 2 {
            return Err(format!("X.509 version {} (OPC UA wants v3)", x.version().0 + 1));
        }
        let mut seen = Vec::new();
        for ext in x.extensions() {
            if seen.contains(&ext.oid) {
                return Err(format!("duplicate extension {}", ext.oid));
            }
            seen.push(ext.oid.clone());
            match ext.parsed_extension() {
                ParsedExtension::BasicConstraints(bc) => {
                    cert.is_ca = bc.ca;
                    cert.path_len = bc.path_len_constraint;
                }
                ParsedExtension::KeyUsage(ku) => {
                    cert.key_usage = Some(KeyUsageBits {
                        digital_signature: ku.digital_signature(),
                        non_repudiation: ku.non_repudiation(),
                        key_encipherment: ku.key_encipherment(),
                        data_encipherment: ku.data_encipherment(),
                        key_cert_sign: ku.key_cert_sign(),
                        crl_sign: ku.crl_sign(),
                    })
                }
                ParsedExtension::ExtendedKeyUsage(eku) => {
                    cert.ext_key_usage =
                        Some(ExtKeyUsage { any: eku.any, server_auth: eku.server_auth, client_auth: eku.client_auth })
                }
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        match name {
                            GeneralName::URI(u) => cert.uris.push((*u).to_string()),
                            GeneralName::DNSName(d) => cert.dns_names.push((*d).to_string()),
                            GeneralName::IPAddress(ip) => {
                                if let Some(ip) = ip_from_bytes(ip) {
                                    cert.ips.push(ip)
                                }
                            }
                            _ => {}
                        }
                    }
                }
                ParsedExtension::SubjectKeyIdentifier(id) => cert.subject_key_id = Some(id.0.to_vec()),
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    cert.authority_key_id = aki.key_identifier.as_ref().map(|id| id.0.to_vec())
                }
                ParsedExtension::ParseError { error } => {
                    return Err(format!("extension {} does not parse: {error}", ext.oid));
                }
                _ => {}
            }
            let enforced = matches!(
                ext.parsed_extension(),
                ParsedExtension::BasicConstraints(_)
                    | ParsedExtension::KeyUsage(_)
                    | ParsedExtension::ExtendedKeyUsage(_)
                    | ParsedExtension::SubjectAlternativeName(_)
            );
            if ext.critical && !enforced {
                // RFC 5280 §4.2: a critical extension the validator does not process (name constraints, policies...)
                // makes the certificate unusable.
                return Err(format!("critical extension {} is not supported", ext.oid));
            }
        }
        Ok(cert)
    }

    /// The DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The signed part (TBSCertificate).
    pub(crate) fn tbs(&self) -> &[u8] {
        self.der.get(self.tbs.clone()).unwrap_or_default()
    }

    /// SHA-1 of the DER encoding, the OPC UA certificate thumbprint.
    pub fn thumbprint(&self) -> [u8; 20] {
        self.thumbprint
    }

    /// The subject as text (RFC 4514 style).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The subject's common name, if any.
    pub fn common_name(&self) -> Option<&str> {
        self.common_name.as_deref()
    }

    /// The subjectAltName URIs (the ApplicationUri of an application instance certificate).
    pub fn uris(&self) -> &[String] {
        &self.uris
    }

    /// The subjectAltName DNS names.
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }

    /// The subjectAltName IP addresses.
    pub fn ip_addresses(&self) -> &[IpAddr] {
        &self.ips
    }

    /// Start and end of the validity period, in seconds since the Unix epoch.
    pub fn validity(&self) -> (i64, i64) {
        (self.not_before, self.not_after)
    }

    /// True for a CA certificate (basicConstraints cA).
    pub fn is_ca(&self) -> bool {
        self.is_ca
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki(&self) -> &[u8] {
        &self.spki
    }

    /// Kind and size of the public key, if certvault supports it.
    pub fn key_algorithm(&self) -> Option<KeyAlgorithm> {
        self.key
    }

    /// True when subject and issuer names are equal (and the key identifiers, where both are present).
    pub(crate) fn is_self_issued(&self) -> bool {
        self.subject_raw == self.issuer_raw
            && match (&self.subject_key_id, &self.authority_key_id) {
                (Some(s), Some(a)) => s == a,
                _ => true,
            }
    }

    /// True when `issuer` could be this certificate's issuer by name and key identifier.
    pub(crate) fn may_be_issued_by(&self, issuer: &Cert) -> bool {
        self.issuer_raw == issuer.subject_raw
            && match (&self.authority_key_id, &issuer.subject_key_id) {
                (Some(a), Some(s)) => a == s,
                _ => true,
            }
    }

    /// The names a client compares the endpoint host with.
    pub(crate) fn host_names(&self) -> Vec<String> {
        self.dns_names.iter().cloned().chain(self.ips.iter().map(|ip| ip.to_string())).collect()
    }

    /// Serial number as hex, for messages.
    pub(crate) fn serial_hex(&self) -> String {
        hex(&self.serial)
    }
}

/// A parsed certificate revocation list.
#[derive(Clone, Debug)]
pub struct Crl {
    der: Arc<[u8]>,
    tbs: Range<usize>,
    pub(crate) issuer_raw: Vec<u8>,
    pub(crate) this_update: i64,
    pub(crate) next_update: Option<i64>,
    pub(crate) revoked: Vec<Vec<u8>>,
    pub(crate) sig_alg: CertSigAlg,
    pub(crate) signature: Vec<u8>,
    pub(crate) authority_key_id: Option<Vec<u8>>,
}

impl Crl {
    /// Parses one DER CRL.
    pub fn from_der(der: &[u8]) -> Result<Crl, String> {
        let (rest, c) = CertificateRevocationList::from_der(der).map_err(|e| format!("not a DER X.509 CRL: {e}"))?;
        if !rest.is_empty() {
            return Err(format!("{} trailing bytes after the CRL", rest.len()));
        }
        let tbs = subslice_range(der, c.tbs_cert_list.as_ref()).ok_or("TBSCertList is not inside the CRL")?;
        let mut authority_key_id = None;
        for ext in c.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    authority_key_id = aki.key_identifier.as_ref().map(|id| id.0.to_vec())
                }
                _ if ext.critical => {
                    // Partitioned (issuingDistributionPoint) and delta CRLs do not list every revoked certificate,
                    // so they cannot prove a certificate unrevoked; only complete CRLs are used.
                    return Err(format!("critical CRL extension {} is not supported", ext.oid));
                }
                _ => {}
            }
        }
        Ok(Crl {
            der: Arc::from(der),
            tbs,
            issuer_raw: c.issuer().as_raw().to_vec(),
            this_update: c.last_update().timestamp(),
            next_update: c.next_update().map(|t| t.timestamp()),
            revoked: c.iter_revoked_certificates().map(|r| strip_zeros(r.raw_serial()).to_vec()).collect(),
            sig_alg: CertSigAlg::from_identifier(&c.signature_algorithm),
            signature: c.signature_value.data.to_vec(),
            authority_key_id,
        })
    }

    /// The DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    pub(crate) fn tbs(&self) -> &[u8] {
        self.der.get(self.tbs.clone()).unwrap_or_default()
    }

    /// True when `ca` may have issued this CRL by name and key identifier (the signature is checked separately).
    pub(crate) fn may_be_issued_by(&self, ca: &Cert) -> bool {
        self.issuer_raw == ca.subject_raw
            && match (&self.authority_key_id, &ca.subject_key_id) {
                (Some(a), Some(s)) => a == s,
                _ => true,
            }
    }

    pub(crate) fn lists(&self, cert: &Cert) -> bool {
        self.revoked.contains(&cert.serial)
    }
}

/// Splits an OPC UA certificate chain ByteString (DER certificates appended, Part 6 §6.2.6) into certificates.
/// Fails on bytes that are not a sequence of whole DER SEQUENCEs.
pub fn split_chain(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let len = der_element_len(rest).ok_or("chain bytes are not DER certificates")?;
        let (one, tail) = rest.split_at(len);
        out.push(one.to_vec());
        rest = tail;
    }
    if out.is_empty() {
        return Err("empty certificate chain".into());
    }
    Ok(out)
}

/// Total length of the DER SEQUENCE at the start of `b`, if it fits in `b`.
fn der_element_len(b: &[u8]) -> Option<usize> {
    if *b.first()? != 0x30 {
        return None;
    }
    let l0 = *b.get(1)? as usize;
    let (header, len) = if l0 < 0x80 {
        (2, l0)
    } else {
        let n = l0 & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        (2 + n, len)
    };
    let total = header.checked_add(len)?;
    (total <= b.len()).then_some(total)
}

fn same_algorithm(a: &AlgorithmIdentifier, b: &AlgorithmIdentifier) -> bool {
    let params = |x: &AlgorithmIdentifier| x.parameters.as_ref().map(|p| (p.tag(), p.data.to_vec()));
    a.algorithm == b.algorithm && params(a) == params(b)
}

fn common_name(name: &X509Name) -> Option<String> {
    name.iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_string)
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

fn subslice_range(whole: &[u8], part: &[u8]) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= whole.len()).then_some(start..end)
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[first..]
}

/// SHA-1 of `data` (OPC UA thumbprints are SHA-1 by definition; no security decision rests on it).
pub(crate) fn sha1(data: &[u8]) -> [u8; 20] {
    let mut out = [0u8; 20];
    let d = HashAlg::Sha1.digest(data);
    if d.len() == 20 {
        out.copy_from_slice(&d);
    }
    out
}

/// Lower-case hex.
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
