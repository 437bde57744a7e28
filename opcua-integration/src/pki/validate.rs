//! Certificate validation as Part 4 §6.1.3: the steps run in the specification's order over the whole chain, and the
//! first failure that is not suppressed decides the status code.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use certvault::KeyAlgorithm;

use super::cert::{split_chain, Cert, Crl};
use super::policy::{PolicyLimits, Role};
use super::sigalg::{verify, VerifyError};
use super::status::CertError;

/// Longest chain followed (leaf, intermediates, root). Real OPC UA deployments use two or three.
const MAX_CHAIN_LEN: usize = 8;

/// Checks an administrator may switch off (Part 6 Annex E.6 / Part 12 TrustListValidationOptions). All are off by
/// default; every suppressed failure is logged at warn level and listed in [`ValidatedCert::suppressed`], as the
/// specification wants suppressed errors audited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ValidationOptions {
    /// Accept an expired or not yet valid leaf (SuppressCertificateExpired).
    pub suppress_time_invalid: bool,
    /// Accept an expired or not yet valid CA (SuppressIssuerCertificateExpired).
    pub suppress_issuer_time_invalid: bool,
    /// Accept a server certificate that does not name the host (SuppressHostNameInvalid).
    pub suppress_host_name_invalid: bool,
    /// Accept an ApplicationUri mismatch. Part 4 marks this check as not suppressible; only for broken peers.
    pub suppress_uri_invalid: bool,
    /// Accept a leaf without a CRL from its issuer (SuppressRevocationStatusUnknown).
    pub suppress_revocation_unknown: bool,
    /// Accept CAs without a CRL from their issuer (SuppressIssuerRevocationStatusUnknown).
    pub suppress_issuer_revocation_unknown: bool,
    /// Accept a leaf whose keyUsage/extendedKeyUsage do not fit.
    pub suppress_use_not_allowed: bool,
}

impl ValidationOptions {
    fn suppresses(&self, e: &CertError) -> bool {
        match e {
            CertError::TimeInvalid { .. } => self.suppress_time_invalid,
            CertError::IssuerTimeInvalid { .. } => self.suppress_issuer_time_invalid,
            CertError::HostNameInvalid { .. } => self.suppress_host_name_invalid,
            CertError::UriInvalid { .. } => self.suppress_uri_invalid,
            CertError::RevocationUnknown { .. } => self.suppress_revocation_unknown,
            CertError::IssuerRevocationUnknown { .. } => self.suppress_issuer_revocation_unknown,
            CertError::UseNotAllowed { .. } => self.suppress_use_not_allowed,
            _ => false,
        }
    }
}

/// What the certificate is validated for.
#[derive(Clone, Debug)]
pub struct ValidationContext {
    /// The time the validity periods and CRLs are checked against.
    pub now: SystemTime,
    /// The peer's ApplicationUri (from its ApplicationDescription); checked when set.
    pub application_uri: Option<String>,
    /// The host of the endpoint URL a client connected to; checked when set (client side only).
    pub host: Option<String>,
    /// The role of the certificate's owner: a client checks a [`Role::Server`] certificate and vice versa.
    pub role: Role,
    /// Key length and algorithm limits of the SecurityPolicy in use.
    pub limits: PolicyLimits,
    /// Suppressed checks.
    pub options: ValidationOptions,
}

impl ValidationContext {
    /// A context for a peer of `role` under `limits`, at the current time, without URI or host checks.
    pub fn new(role: Role, limits: PolicyLimits) -> Self {
        ValidationContext {
            now: SystemTime::now(),
            application_uri: None,
            host: None,
            role,
            limits,
            options: ValidationOptions::default(),
        }
    }

    /// Also check the subjectAltName URI.
    pub fn with_application_uri(mut self, uri: impl Into<String>) -> Self {
        self.application_uri = Some(uri.into());
        self
    }

    /// Also check the host name (a client checking a server).
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Validate at `now` instead of the current time.
    pub fn at(mut self, now: SystemTime) -> Self {
        self.now = now;
        self
    }

    /// Use these options.
    pub fn with_options(mut self, options: ValidationOptions) -> Self {
        self.options = options;
        self
    }
}

/// Which certificate of the chain made it trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrustAnchor {
    /// The leaf itself is in trusted/certs.
    Leaf,
    /// The CA at this index of [`ValidatedCert::chain`] is in trusted/certs.
    Issuer(usize),
}

/// A certificate that passed validation.
#[derive(Clone, Debug)]
pub struct ValidatedCert {
    chain: Vec<Cert>,
    trusted_by: TrustAnchor,
    suppressed: Vec<CertError>,
}

impl ValidatedCert {
    /// The peer's certificate.
    pub fn leaf(&self) -> &Cert {
        // invariant: only `evaluate` builds this, always with at least the leaf.
        &self.chain[0]
    }

    /// Leaf first, then its issuers up to the self-signed root.
    pub fn chain(&self) -> &[Cert] {
        &self.chain
    }

    /// What made the chain trusted.
    pub fn trusted_by(&self) -> TrustAnchor {
        self.trusted_by
    }

    /// Failures ignored because [`ValidationOptions`] suppress them (to be audited).
    pub fn suppressed(&self) -> &[CertError] {
        &self.suppressed
    }
}

/// The trust lists at one moment.
#[derive(Clone, Debug, Default)]
pub(crate) struct TrustSnapshot {
    pub trusted: Vec<Cert>,
    pub issuers: Vec<Cert>,
    pub crls: Vec<Crl>,
}

/// Runs the checks of Part 4 §6.1.3 over `chain` (leaf first) against `trust`.
pub(crate) fn evaluate(
    trust: &TrustSnapshot,
    chain: &[Vec<u8>],
    ctx: &ValidationContext,
) -> Result<ValidatedCert, CertError> {
    let now = unix_seconds(ctx.now);
    let received = parse_received(chain)?;
    // invariant from here on: `path` holds at least the leaf (build_chain starts from the non-empty `received`).
    let (path, sig_errors) = build_chain(trust, &received)?;
    if let Some(e) = sig_errors.into_iter().next() {
        return Err(e);
    }
    let mut suppressed = Vec::new();
    let mut step = |errors: Vec<CertError>| -> Result<(), CertError> {
        for e in errors {
            if ctx.options.suppresses(&e) {
                tracing::warn!(status = %e.status_code(), "suppressed certificate validation error: {e}");
                suppressed.push(e);
            } else {
                return Err(e);
            }
        }
        Ok(())
    };
    step(policy_errors(&path, &ctx.limits))?;
    let trusted_by =
        trust_anchor(trust, &path).ok_or_else(|| CertError::Untrusted { subject: path[0].subject.clone() })?;
    step(time_errors(&path, now))?;
    step(host_errors(&path[0], ctx.host.as_deref()))?;
    step(uri_errors(&path[0], ctx.application_uri.as_deref()))?;
    step(usage_errors(&path, ctx.role))?;
    let (unknown, revoked) = revocation_errors(trust, &path, now);
    step(unknown)?;
    step(revoked)?;
    Ok(ValidatedCert { chain: path, trusted_by, suppressed })
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map(|s| -s).unwrap_or(i64::MIN),
    }
}

/// Step "Certificate structure": every received certificate must parse; an element may itself be a chain ByteString.
fn parse_received(chain: &[Vec<u8>]) -> Result<Vec<Cert>, CertError> {
    let invalid = |reason: String| CertError::Invalid { reason };
    let mut out = Vec::new();
    for element in chain {
        for der in split_chain(element).map_err(invalid)? {
            out.push(Cert::from_der(&der).map_err(invalid)?);
        }
    }
    if out.is_empty() {
        return Err(invalid("no certificate".into()));
    }
    Ok(out)
}

/// Steps "Build certificate chain" and "Signature": follows issuers through the received certificates, trusted/ and
/// issuer/ up to a self-signed root. Among several candidates the one whose key verifies the signature is taken, so
/// a renewed CA with the same name does not break chains.
fn build_chain(trust: &TrustSnapshot, received: &[Cert]) -> Result<(Vec<Cert>, Vec<CertError>), CertError> {
    // invariant: parse_received never returns an empty list.
    let mut path = vec![received[0].clone()];
    let mut sig_errors = Vec::new();
    let pool: Vec<&Cert> = received[1..].iter().chain(&trust.trusted).chain(&trust.issuers).collect();
    loop {
        // invariant: path starts non-empty and only grows.
        let cur = &path[path.len() - 1];
        let self_check = cur.is_self_issued().then(|| check_signature(cur, cur));
        if let Some(Ok(())) = self_check {
            break;
        }
        let candidates: Vec<&Cert> = pool
            .iter()
            .copied()
            .filter(|c| cur.may_be_issued_by(c) && !path.iter().any(|p| p.thumbprint == c.thumbprint))
            .collect();
        let found = candidates.iter().find(|c| check_signature(cur, c).is_ok()).or(candidates.first());
        let Some(&issuer) = found else {
            match self_check {
                Some(Err(e)) => {
                    sig_errors.push(e);
                    break;
                }
                _ => {
                    return Err(CertError::ChainIncomplete { subject: cur.subject.clone(), issuer: cur.issuer.clone() })
                }
            }
        };
        if let Err(e) = check_signature(cur, issuer) {
            sig_errors.push(e);
        }
        if path.len() >= MAX_CHAIN_LEN {
            return Err(CertError::ChainIncomplete { subject: cur.subject.clone(), issuer: cur.issuer.clone() });
        }
        path.push(issuer.clone());
    }
    Ok((path, sig_errors))
}

/// Checks that each certificate of `chain` (leaf first) is signed by the next one: the integrity of a chain a
/// caller hands over with the leaf (GDS push UpdateCertificate), before any trust decision.
pub fn check_chain_signatures(chain: &[Cert]) -> Result<(), CertError> {
    for pair in chain.windows(2) {
        if let [cert, issuer] = pair {
            check_signature(cert, issuer)?;
        }
    }
    Ok(())
}

fn check_signature(cert: &Cert, issuer: &Cert) -> Result<(), CertError> {
    verify(&issuer.spki, &cert.sig_alg, cert.tbs(), &cert.signature).map_err(|e| match e {
        VerifyError::Unsupported(reason) => {
            CertError::Invalid { reason: format!("signature of '{}' cannot be checked: {reason}", cert.subject) }
        }
        VerifyError::Mismatch => CertError::SignatureInvalid { subject: cert.subject.clone() },
    })
}

/// Step "Security policy check": key lengths and signature hashes of every certificate.
fn policy_errors(path: &[Cert], limits: &PolicyLimits) -> Vec<CertError> {
    let mut out = Vec::new();
    for cert in path {
        let fail = |reason: String| CertError::PolicyCheckFailed { subject: cert.subject.clone(), reason };
        match cert.key {
            Some(KeyAlgorithm::Rsa { bits }) if !limits.rsa_bits_allowed(bits) => {
                out.push(fail(if limits.max_rsa_bits == 0 {
                    "RSA keys are not allowed".into()
                } else {
                    format!("RSA key of {bits} bits, allowed {}..={}", limits.min_rsa_bits, limits.max_rsa_bits)
                }))
            }
            Some(KeyAlgorithm::EcP256 | KeyAlgorithm::EcP384) if !limits.allow_ec_keys => {
                out.push(fail("EC keys are not allowed".into()))
            }
            None => out.push(fail("unsupported public key type".into())),
            _ => {}
        }
        if cert.sig_alg.hash() == Some(certvault::HashAlg::Sha1) && !limits.allow_sha1_signatures {
            out.push(fail("SHA-1 signature".into()));
        }
    }
    out
}

/// Step "Trust list check".
fn trust_anchor(trust: &TrustSnapshot, path: &[Cert]) -> Option<TrustAnchor> {
    let trusted = |c: &Cert| trust.trusted.iter().any(|t| t.thumbprint == c.thumbprint);
    if trusted(&path[0]) {
        return Some(TrustAnchor::Leaf);
    }
    path.iter().enumerate().skip(1).find(|(_, c)| trusted(c)).map(|(i, _)| TrustAnchor::Issuer(i))
}

/// Step "Validity period".
fn time_errors(path: &[Cert], now: i64) -> Vec<CertError> {
    let mut out = Vec::new();
    for (i, c) in path.iter().enumerate() {
        if now < c.not_before || now > c.not_after {
            let (subject, not_before, not_after) =
                (c.subject.clone(), c.not_before_text.clone(), c.not_after_text.clone());
            out.push(if i == 0 {
                CertError::TimeInvalid { subject, not_before, not_after }
            } else {
                CertError::IssuerTimeInvalid { subject, not_before, not_after }
            });
        }
    }
    out
}

/// Step "Host name" (leaf only).
fn host_errors(leaf: &Cert, host: Option<&str>) -> Vec<CertError> {
    match host {
        Some(host) if !host_matches(leaf, host) => {
            vec![CertError::HostNameInvalid { host: host.to_string(), names: leaf.host_names() }]
        }
        _ => Vec::new(),
    }
}

/// True when `host` (a DNS name or an IP address, IPv6 possibly in brackets) is among the certificate's names.
pub(crate) fn host_matches(cert: &Cert, host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return cert.ips.contains(&ip);
    }
    let host = host.trim_end_matches('.');
    cert.dns_names.iter().any(|d| d.trim_end_matches('.').eq_ignore_ascii_case(host))
}

/// Step "URI" (leaf only).
fn uri_errors(leaf: &Cert, uri: Option<&str>) -> Vec<CertError> {
    match uri {
        Some(uri) if !leaf.uris.iter().any(|u| u == uri) => {
            vec![CertError::UriInvalid { expected: uri.to_string(), found: leaf.uris.clone() }]
        }
        _ => Vec::new(),
    }
}

/// Why the leaf's keyUsage/extendedKeyUsage do not fit an application instance certificate of `role`, if they don't.
/// Part 6 §6.2.2: digitalSignature always (OPC UA signs with it); dataEncipherment for RSA, since OpenSecureChannel
/// encrypts message data directly with the key.
pub(crate) fn leaf_usage_problem(leaf: &Cert, role: Role) -> Option<String> {
    let Some(ku) = leaf.key_usage else {
        return Some("no keyUsage extension".into());
    };
    if !ku.digital_signature {
        return Some("keyUsage lacks digitalSignature".into());
    }
    if matches!(leaf.key, Some(KeyAlgorithm::Rsa { .. })) && !ku.data_encipherment {
        return Some("keyUsage lacks dataEncipherment (needed for RSA)".into());
    }
    // RFC 5280 §4.2.1.12: no extendedKeyUsage extension means no restriction.
    if let Some(eku) = leaf.ext_key_usage {
        let ok = eku.any
            || match role {
                Role::Server => eku.server_auth,
                Role::Client => eku.client_auth,
                Role::Any => true,
            };
        if !ok {
            return Some(format!(
                "extendedKeyUsage lacks {}",
                if role == Role::Server { "serverAuth" } else { "clientAuth" }
            ));
        }
    }
    None
}

/// Step "Certificate usage": the leaf's usage; every issuer must be a CA allowed to sign certificates at its depth.
fn usage_errors(path: &[Cert], role: Role) -> Vec<CertError> {
    let mut out = Vec::new();
    if let Some(reason) = leaf_usage_problem(&path[0], role) {
        out.push(CertError::UseNotAllowed { subject: path[0].subject.clone(), reason });
    }
    for (i, ca) in path.iter().enumerate().skip(1) {
        let fail = |reason: String| CertError::IssuerUseNotAllowed { subject: ca.subject.clone(), reason };
        if !ca.is_ca {
            out.push(fail("basicConstraints does not say CA".into()));
        } else if ca.key_usage.is_some_and(|ku| !ku.key_cert_sign) {
            out.push(fail("keyUsage lacks keyCertSign".into()));
        } else if let Some(max) = ca.path_len {
            // Intermediate CAs below this one: path[1..i].
            let below = (i - 1) as u32;
            if below > max {
                out.push(fail(format!("pathLenConstraint {max} exceeded by {below} intermediate CAs")));
            }
        }
    }
    out
}

/// Steps "Find revocation list" and "Revocation check": every certificate issued by a CA needs a CRL of that CA,
/// signed by it and already in force. Returns (unknown, revoked) failures.
fn revocation_errors(trust: &TrustSnapshot, path: &[Cert], now: i64) -> (Vec<CertError>, Vec<CertError>) {
    let (mut unknown, mut revoked) = (Vec::new(), Vec::new());
    for (i, pair) in path.windows(2).enumerate() {
        let (cert, ca) = (&pair[0], &pair[1]);
        let crls: Vec<&Crl> = trust.crls.iter().filter(|crl| crl_usable(crl, ca, now)).collect();
        if crls.is_empty() {
            let (subject, issuer) = (cert.subject.clone(), ca.subject.clone());
            unknown.push(if i == 0 {
                CertError::RevocationUnknown { subject, issuer }
            } else {
                CertError::IssuerRevocationUnknown { subject, issuer }
            });
        } else if crls.iter().any(|crl| crl.lists(cert)) {
            let (subject, serial) = (cert.subject.clone(), cert.serial_hex());
            revoked.push(if i == 0 {
                CertError::Revoked { subject, serial }
            } else {
                CertError::IssuerRevoked { subject, serial }
            });
        }
    }
    (unknown, revoked)
}

fn crl_usable(crl: &Crl, ca: &Cert, now: i64) -> bool {
    if !crl.may_be_issued_by(ca) || crl.this_update > now {
        return false;
    }
    if ca.key_usage.is_some_and(|ku| !ku.crl_sign) {
        tracing::warn!(ca = %ca.subject, "ignoring a CRL: its CA lacks the cRLSign key usage");
        return false;
    }
    if verify(&ca.spki, &crl.sig_alg, crl.tbs(), &crl.signature).is_err() {
        tracing::warn!(ca = %ca.subject, "ignoring a CRL whose signature does not verify with its CA");
        return false;
    }
    if crl.next_update.is_some_and(|next| next < now) {
        // A stale list still proves what it lists as revoked; the operator should fetch a fresh one.
        tracing::warn!(ca = %ca.subject, "the CRL is past its nextUpdate time");
    }
    true
}
