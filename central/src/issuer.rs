//! Issuers behind one trait: [`SelfSigned`] (the device made the certificate; the central checks and records it),
//! [`OwnCa`] (the central's CA, its key in a vault), and [`External`] (a command that turns a CSR into a chain).

use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use certvault::csr::{CsrRequest, PublicOnly, RcgenKey};
use certvault::{KeyAlgorithm, PublicKey, SharedKey};
use rcgen::{IsCa, SerialNumber};
use serde::{Deserialize, Serialize};
use x509_parser::prelude::*;

use crate::error::{CentralError, Result};

/// Which issuer an order item names: `self-signed`, `ca:NAME` or `external:NAME`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum IssuerRef {
    /// The device signs its own certificate.
    SelfSigned,
    /// One of the central's CAs.
    Ca(String),
    /// An external CA plug-in from the configuration.
    External(String),
}

impl IssuerRef {
    /// Parses the form order items use.
    pub fn parse(s: &str) -> Result<Self> {
        if s == "self-signed" {
            return Ok(IssuerRef::SelfSigned);
        }
        let named = |rest: &str| -> Result<String> {
            if rest.is_empty() || !rest.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
                return Err(CentralError::Invalid(format!("issuer name {rest:?} (letters, digits, - _ . only)")));
            }
            Ok(rest.to_owned())
        };
        if let Some(rest) = s.strip_prefix("ca:") {
            return Ok(IssuerRef::Ca(named(rest)?));
        }
        if let Some(rest) = s.strip_prefix("external:") {
            return Ok(IssuerRef::External(named(rest)?));
        }
        Err(CentralError::Invalid(format!("issuer {s:?} (use self-signed, ca:NAME or external:NAME)")))
    }
}

impl std::fmt::Display for IssuerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IssuerRef::SelfSigned => f.write_str("self-signed"),
            IssuerRef::Ca(n) => write!(f, "ca:{n}"),
            IssuerRef::External(n) => write!(f, "external:{n}"),
        }
    }
}

/// What the certificate is for: the public key in one of its forms.
#[derive(Clone, Copy, Debug)]
pub enum Subject<'a> {
    /// A PKCS#10 CSR (DER) made inside the device's vault.
    Csr(&'a [u8]),
    /// A bare SubjectPublicKeyInfo (DER) of a key the central's key maker made.
    PublicKey(&'a [u8]),
    /// A self-signed certificate (DER) the device made.
    Certificate(&'a [u8]),
}

/// One certificate to issue: the subject and what the order says about it.
#[derive(Clone, Debug)]
pub struct IssueRequest<'a> {
    /// The public key.
    pub subject: Subject<'a>,
    /// Subject common name.
    pub common_name: &'a str,
    /// The OPC UA ApplicationUri.
    pub application_uri: &'a str,
    /// DNS names or IP addresses.
    pub host_names: &'a [String],
    /// Validity in days.
    pub validity_days: u32,
}

/// Something that turns a subject into a certificate chain (leaf first, DER).
pub trait Issuer: Send + Sync {
    /// The reference order items use for this issuer.
    fn reference(&self) -> IssuerRef;
    /// Issues (or, for self-signed, checks) the certificate. Blocking: may call a vault or run a command.
    fn issue(&self, request: &IssueRequest<'_>) -> Result<Vec<Vec<u8>>>;
}

/// The SubjectPublicKeyInfo (DER) of a CSR, after checking the CSR's signature.
pub fn csr_spki(csr_der: &[u8]) -> Result<Vec<u8>> {
    let (rest, csr) = X509CertificationRequest::from_der(csr_der)
        .map_err(|e| CentralError::Invalid(format!("certificate signing request: {e}")))?;
    if !rest.is_empty() {
        return Err(CentralError::Invalid("trailing bytes after the certificate signing request".into()));
    }
    csr.verify_signature().map_err(|e| CentralError::Invalid(format!("the CSR's signature does not verify: {e}")))?;
    Ok(csr.certification_request_info.subject_pki.raw.to_vec())
}

/// Facts the central records about a certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertFacts {
    /// Serial number, lower-case hex without leading zero bytes.
    pub serial_number: String,
    /// Subject DN.
    pub subject: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// SubjectPublicKeyInfo DER.
    pub spki: Vec<u8>,
    /// subjectAltName URIs.
    pub uris: Vec<String>,
}

/// Parses a certificate into the facts the central records.
pub fn cert_facts(der: &[u8]) -> Result<CertFacts> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| CentralError::Invalid(format!("certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(CentralError::Invalid("trailing bytes after the certificate".into()));
    }
    let mut uris = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(u) = name {
                uris.push((*u).to_owned());
            }
        }
    }
    let serial = cert.tbs_certificate.raw_serial();
    let first = serial.iter().position(|b| *b != 0).unwrap_or(serial.len().saturating_sub(1));
    Ok(CertFacts {
        serial_number: hex::encode(&serial[first..]),
        subject: cert.subject().to_string(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        spki: cert.public_key().raw.to_vec(),
        uris,
    })
}

/// Checks an issued chain before the central records or hands it out: the leaf must carry `spki` and the
/// ApplicationUri, and every certificate must parse.
pub fn check_chain(issuer: &IssuerRef, chain: &[Vec<u8>], spki: &[u8], application_uri: &str) -> Result<CertFacts> {
    let leaf = chain.first().ok_or_else(|| CentralError::issuer(issuer.to_string(), "returned an empty chain"))?;
    let facts = cert_facts(leaf).map_err(|e| CentralError::issuer(issuer.to_string(), format!("leaf: {e}")))?;
    if facts.spki != spki {
        return Err(CentralError::issuer(issuer.to_string(), "the leaf certificate is not for the requested key"));
    }
    if !facts.uris.iter().any(|u| u == application_uri) {
        return Err(CentralError::issuer(
            issuer.to_string(),
            format!("the leaf certificate does not carry the ApplicationUri {application_uri}"),
        ));
    }
    for (i, der) in chain.iter().enumerate().skip(1) {
        cert_facts(der).map_err(|e| CentralError::issuer(issuer.to_string(), format!("chain certificate {i}: {e}")))?;
    }
    Ok(facts)
}

/// The issuer for certificates the device signed itself: it checks the certificate and hands it back for recording.
#[derive(Clone, Copy, Debug, Default)]
pub struct SelfSigned;

impl Issuer for SelfSigned {
    fn reference(&self) -> IssuerRef {
        IssuerRef::SelfSigned
    }

    fn issue(&self, request: &IssueRequest<'_>) -> Result<Vec<Vec<u8>>> {
        let err = |m: String| CentralError::issuer("self-signed", m);
        let Subject::Certificate(der) = request.subject else {
            return Err(err("needs the self-signed certificate the device made, not a CSR or a bare key".into()));
        };
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| err(format!("certificate: {e}")))?;
        if cert.subject() != cert.issuer() {
            return Err(err("the certificate is not self-signed (issuer differs from subject)".into()));
        }
        cert.verify_signature(None).map_err(|e| err(format!("the self-signature does not verify: {e}")))?;
        let now = ::time::OffsetDateTime::now_utc().unix_timestamp();
        if cert.validity().not_after.timestamp() < now {
            return Err(err("the certificate has expired".into()));
        }
        let max = now + i64::from(request.validity_days) * 86_400 + 86_400;
        if cert.validity().not_after.timestamp() > max {
            return Err(err(format!(
                "the certificate outlives the ordered validity of {} days",
                request.validity_days
            )));
        }
        Ok(vec![der.to_vec()])
    }
}

/// The central's own CA: its certificate in the database, its key in a vault (vaultd or PKCS#11).
pub struct OwnCa {
    name: String,
    key: SharedKey,
    certificate: Vec<u8>,
}

impl std::fmt::Debug for OwnCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnCa").field("name", &self.name).field("key", &self.key.info().label).finish()
    }
}

fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| CentralError::Config("the system random generator failed".into()))?;
    // A positive INTEGER without a leading zero byte: clear the top bit, set the next one.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn rcgen_err(issuer: &str, e: rcgen::Error) -> CentralError {
    CentralError::issuer(issuer, format!("{e}"))
}

impl OwnCa {
    /// A CA with its key handle and certificate. The certificate must carry the key's public key.
    pub fn new(name: &str, key: SharedKey, certificate: Vec<u8>) -> Result<OwnCa> {
        let pk = PublicKey::from_certificate(&certificate)?;
        if pk.spki_der() != key.info().spki_der.as_slice() {
            return Err(CentralError::Config(format!("CA {name}: the certificate is not for the vault key")));
        }
        Ok(OwnCa { name: name.to_owned(), key, certificate })
    }

    /// Makes a self-signed CA certificate for `key`, signed inside its vault.
    pub fn create(name: &str, key: SharedKey, common_name: &str, validity_days: u32) -> Result<OwnCa> {
        let certificate = certvault::csr::self_signed_ca(
            key.as_ref(),
            common_name,
            Duration::from_secs(u64::from(validity_days) * 86_400),
        )?;
        OwnCa::new(name, key, certificate)
    }

    /// The CA's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The CA certificate (DER).
    pub fn certificate(&self) -> &[u8] {
        &self.certificate
    }

    fn issuer(&self) -> Result<rcgen::Issuer<'static, RcgenKey<'_>>> {
        let signer = RcgenKey::new(self.key.as_ref())?;
        rcgen::Issuer::from_ca_cert_der(&self.certificate.clone().into(), signer)
            .map_err(|e| rcgen_err(&format!("ca:{}", self.name), e))
    }

    /// Signs a CRL with `number` listing `revoked` (serial hex, revocation time, reason).
    pub fn sign_crl(
        &self,
        number: u64,
        revoked: &[(String, i64, crate::registry::RevocationReason)],
        valid_for: Duration,
    ) -> Result<Vec<u8>> {
        let reference = format!("ca:{}", self.name);
        let now = ::time::OffsetDateTime::now_utc();
        let mut revoked_certs = Vec::with_capacity(revoked.len());
        for (serial, at, reason) in revoked {
            let bytes = hex::decode(serial).map_err(|e| CentralError::Invalid(format!("stored serial: {e}")))?;
            revoked_certs.push(rcgen::RevokedCertParams {
                serial_number: SerialNumber::from_slice(&bytes),
                revocation_time: ::time::OffsetDateTime::from_unix_timestamp(*at)
                    .map_err(|e| CentralError::Invalid(format!("stored revocation time: {e}")))?,
                reason_code: Some(reason.to_rcgen()),
                invalidity_date: None,
            });
        }
        let params = rcgen::CertificateRevocationListParams {
            this_update: now,
            next_update: now + ::time::Duration::seconds(i64::try_from(valid_for.as_secs()).unwrap_or(i64::MAX / 2)),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let issuer = self.issuer()?;
        Ok(params.signed_by(&issuer).map_err(|e| rcgen_err(&reference, e))?.der().to_vec())
    }
}

/// Splits host names into DNS names and IP addresses.
fn host_sans(hosts: &[String]) -> (Vec<String>, Vec<IpAddr>) {
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for h in hosts {
        match h.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => dns.push(h.clone()),
        }
    }
    (dns, ips)
}

impl Issuer for OwnCa {
    fn reference(&self) -> IssuerRef {
        IssuerRef::Ca(self.name.clone())
    }

    fn issue(&self, request: &IssueRequest<'_>) -> Result<Vec<Vec<u8>>> {
        let reference = format!("ca:{}", self.name);
        let spki = match request.subject {
            Subject::Csr(csr) => csr_spki(csr)?,
            Subject::PublicKey(spki) => spki.to_vec(),
            Subject::Certificate(_) => {
                return Err(CentralError::issuer(
                    reference,
                    "a CA issues from a CSR or a public key, not a certificate",
                ))
            }
        };
        let subject = PublicOnly::from_spki(&spki)?;
        let algorithm: KeyAlgorithm = PublicKey::from_spki(&spki)?.algorithm();
        let (dns_names, ip_addresses) = host_sans(request.host_names);
        // The order, not the CSR, says what the certificate contains: the CSR only proves possession of the key.
        let csr_request = CsrRequest {
            common_name: request.common_name.to_owned(),
            organization: None,
            application_uri: Some(request.application_uri.to_owned()),
            dns_names,
            ip_addresses,
        };
        let mut params = csr_request.to_params(algorithm)?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        certvault::csr::set_validity(&mut params, Duration::from_secs(u64::from(request.validity_days) * 86_400));
        let issuer = self.issuer()?;
        let leaf = params.signed_by(&subject, &issuer).map_err(|e| rcgen_err(&reference, e))?;
        Ok(vec![leaf.der().to_vec(), self.certificate.clone()])
    }
}

/// How an external CA command gets the CSR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CsrInput {
    /// PEM on standard input.
    #[default]
    Stdin,
    /// PEM in a temporary file whose path replaces `{csr}` in the arguments (or is appended).
    File,
}

/// An external CA plug-in: a command that receives a CSR (PEM, on stdin or as a file) and prints the chain (PEM
/// certificates, leaf first) on stdout. A non-zero exit, a timeout or output without a certificate is an error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct External {
    /// The plug-in's name (`external:NAME` in orders).
    #[serde(default)]
    pub name: String,
    /// Program and arguments.
    pub command: Vec<String>,
    /// How the CSR is passed.
    #[serde(default)]
    pub csr_input: CsrInput,
    /// Seconds before the command is killed.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_timeout() -> u64 {
    60
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER certificates of every `CERTIFICATE` block in `text`.
pub fn pem_certificates(text: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(text) {
        let block = block.map_err(|e| CentralError::Invalid(format!("PEM: {e}")))?;
        if block.label == "CERTIFICATE" {
            out.push(block.contents);
        }
    }
    Ok(out)
}

impl External {
    fn run(&self, csr_pem: &str) -> Result<Vec<u8>> {
        let reference = format!("external:{}", self.name);
        let err = |m: String| CentralError::issuer(reference.clone(), m);
        let (program, args) = self.command.split_first().ok_or_else(|| err("no command configured".into()))?;
        let dir = tempfile::tempdir().map_err(|e| CentralError::io("temporary directory for the CSR", e))?;
        let mut args: Vec<String> = args.to_vec();
        let mut stdin_data = None;
        match self.csr_input {
            CsrInput::Stdin => stdin_data = Some(csr_pem.as_bytes().to_vec()),
            CsrInput::File => {
                let path: PathBuf = dir.path().join("request.csr.pem");
                std::fs::write(&path, csr_pem).map_err(|e| CentralError::io("writing the CSR file", e))?;
                let p = path.display().to_string();
                if args.iter().any(|a| a.contains("{csr}")) {
                    args = args.iter().map(|a| a.replace("{csr}", &p)).collect();
                } else {
                    args.push(p);
                }
            }
        }
        let mut child = Command::new(program)
            .args(&args)
            // Its own process group, so a timeout kills whatever the command started too.
            .process_group(0)
            .stdin(if stdin_data.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("cannot start {program}: {e}")))?;
        let writer = match (child.stdin.take(), stdin_data) {
            (Some(mut stdin), Some(data)) => Some(std::thread::spawn(move || {
                let _ = stdin.write_all(&data);
            })),
            _ => None,
        };
        let reader = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(p) = pipe {
                    let _ = p.take(16 << 20).read_to_end(&mut buf);
                }
                buf
            })
        };
        let out = reader(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
        let errout = reader(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
        let deadline = Instant::now() + Duration::from_secs(self.timeout_secs.max(1));
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() > deadline => {
                    let _ = rustix::process::kill_process_group(
                        rustix::process::Pid::from_child(&child),
                        rustix::process::Signal::KILL,
                    );
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(err(format!("{program} did not finish within {} s", self.timeout_secs)));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(err(format!("waiting for {program}: {e}"))),
            }
        };
        if let Some(w) = writer {
            let _ = w.join();
        }
        let stdout = out.join().unwrap_or_default();
        let stderr = errout.join().unwrap_or_default();
        if !status.success() {
            let said = String::from_utf8_lossy(&stderr);
            let said: String = said.trim().chars().take(2000).collect();
            return Err(err(format!("{program} failed ({status}): {said}")));
        }
        Ok(stdout)
    }
}

impl Issuer for External {
    fn reference(&self) -> IssuerRef {
        IssuerRef::External(self.name.clone())
    }

    fn issue(&self, request: &IssueRequest<'_>) -> Result<Vec<Vec<u8>>> {
        let reference = format!("external:{}", self.name);
        let Subject::Csr(csr) = request.subject else {
            return Err(CentralError::issuer(reference, "an external CA needs a CSR made on the device"));
        };
        csr_spki(csr)?;
        let stdout = self.run(&pem("CERTIFICATE REQUEST", csr))?;
        let chain = pem_certificates(&stdout)
            .map_err(|e| CentralError::issuer(reference.clone(), format!("unreadable output: {e}")))?;
        if chain.is_empty() {
            return Err(CentralError::issuer(reference, "the command printed no PEM certificate"));
        }
        Ok(chain)
    }
}
