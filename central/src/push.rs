//! GDS push (OPC 10000-12 §7.7): the central renews a running OPC UA server's certificate, and pushes its CA and
//! current CRL into the server's trust list, so that a renewal or a revocation reaches the server without a restart.
//!
//! The central connects as an OPC UA client (SignAndEncrypt, the strongest policy both sides have, its application
//! key in a vault) with an administrator user, and:
//! 1. CreateSigningRequest with regeneratePrivateKey: the server makes the new key inside its own vault; or, with a
//!    [`KeySource::Central`], the central's key maker makes the key inside the central's vault, sealed to the
//!    server vault's transport key (format "CertVaultSealed"), so that only that vault can open it;
//! 2. issues the certificate with one of its own CAs and records it like any issued certificate (listed, expiring,
//!    revocable), against the server's device (its dongle serial);
//! 3. UpdateCertificate (with the sealed key, if any) and ApplyChanges;
//! 4. optionally ([`PushRequest::trust_list`]) writes the CA certificate and its current CRL into the server's
//!    DefaultApplicationGroup TrustList (replacing older CRLs of that CA) and applies the change.
//!
//! The central never holds a private key: the server's key stays in the server's vault, a central-made key leaves
//! the central's vault only sealed. Documented in `docs/central.md` (push section).

use std::sync::Arc;
use std::time::Duration;

use certvault::provision::{KeyMaker, Recipient};
use certvault::{KeyAlgorithm, PublicKey};
use certvault_opcua::channel::asymmetric::LocalIdentity;
use certvault_opcua::channel::policy::{SecurityMode, SecurityPolicy};
use certvault_opcua::client::{ClientOptions, EndpointFilter, Session, SessionOptions, UserIdentity};
use certvault_opcua::pki::{Cert, PkiStore, TrustListMasks};
use certvault_opcua::server::push::SEALED_KEY_FORMAT;
use opcua_types::{ByteString, StatusCode, TrustListDataType};
use sqlx::Row;
use x509_parser::prelude::FromDer;

use crate::db::now;
use crate::error::CentralError;
use crate::issuer::{self, IssueRequest, Issuer, IssuerRef, Subject};
use crate::registry;
use crate::service::Central;

/// Why a push failed. Each variant names the step, so an operator knows what did and did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The central's side (database, CA, issuer, device) refused.
    #[error(transparent)]
    Central(#[from] CentralError),
    /// No session could be opened with the server (unreachable, no SignAndEncrypt endpoint, the server certificate
    /// not trusted by the central's PKI store, the administrator refused, ...).
    #[error("connecting to {url}: {source}")]
    Connect {
        /// The server's endpoint URL.
        url: String,
        /// What the OPC UA client said.
        source: certvault_opcua::Error,
    },
    /// The server refused a push method; nothing after this step happened.
    #[error("the server refused {step}: {status} ({source})")]
    Refused {
        /// The method (CreateSigningRequest, UpdateCertificate, ...).
        step: &'static str,
        /// The status code the server answered.
        status: StatusCode,
        /// The client error.
        source: certvault_opcua::Error,
    },
    /// The server's answer cannot be used (a CSR for another ApplicationUri, no certificate in its endpoint, ...).
    #[error("{0}")]
    Invalid(String),
}

/// Result of this module.
pub type Result<T, E = PushError> = std::result::Result<T, E>;

fn refused(step: &'static str) -> impl FnOnce(certvault_opcua::Error) -> PushError {
    move |source| {
        let status = source.status_code();
        tracing::warn!(step, %status, "push refused by the server: {source}");
        PushError::Refused { step, status, source }
    }
}

/// The running server and how the central logs in to it.
#[derive(Clone)]
pub struct PushTarget {
    /// The server's endpoint URL (`opc.tcp://host:port/...`).
    pub endpoint_url: String,
    /// The central's client application identity: its certificate and its key in a vault.
    pub client: LocalIdentity,
    /// The central client's ApplicationUri (in its certificate).
    pub client_application_uri: String,
    /// The central's trust store: it judges the server's certificate (trust the server, or the CA that issued it).
    pub pki: Arc<PkiStore>,
    /// An administrator of the server: user name and password, or an X.509 user whose key is in a vault.
    pub user: UserIdentity,
    /// Bound for connecting and for each call.
    pub timeout: Duration,
}

impl std::fmt::Debug for PushTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushTarget").field("endpoint_url", &self.endpoint_url).finish_non_exhaustive()
    }
}

/// Where the server's new key is made.
#[derive(Clone)]
pub enum KeySource {
    /// Inside the server's own vault (CreateSigningRequest with regeneratePrivateKey).
    Server,
    /// Inside the central's vault, sealed to the server vault's transport key.
    Central {
        /// The central's key maker (vaultd: [`certvault::DaemonClient`]).
        maker: Arc<dyn KeyMaker>,
        /// The server vault's transport key; `None`: the one the device registered with the central.
        transport: Option<Recipient>,
    },
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Server => f.write_str("Server"),
            KeySource::Central { .. } => f.write_str("Central"),
        }
    }
}

/// What to push.
#[derive(Clone, Debug)]
pub struct PushRequest {
    /// The server's device: the serial of the dongle (vault) that holds its key, registered and entitled at the
    /// central. The certificate is recorded against it.
    pub device: String,
    /// The central's CA that issues the certificate (`ca:NAME` without the prefix).
    pub ca: String,
    /// Validity of the new certificate in days.
    pub validity_days: u32,
    /// Where the new key is made.
    pub key: KeySource,
    /// Also write the CA certificate and its current CRL into the server's trust list.
    pub trust_list: bool,
}

/// What a push did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PushReport {
    /// The new certificate's serial number (hex), as the central lists it.
    pub serial_number: String,
    /// SHA-256 thumbprint of the new certificate (hex).
    pub sha256: String,
    /// The new certificate (DER).
    #[serde(skip)]
    pub certificate: Vec<u8>,
    /// The security policy of the push session.
    pub policy: String,
    /// "server" or "central".
    pub key_made_by: &'static str,
    /// Whether the CA and CRL went into the server's trust list.
    pub trust_list: bool,
}

/// What [`issue_recorded`] issues: a key (CSR or bare public key) for a device, with the names the certificate
/// carries.
#[derive(Clone, Debug)]
pub struct Issuance<'a> {
    /// The device (dongle serial) the certificate is recorded against.
    pub device: &'a str,
    /// The issuing CA's name.
    pub ca: &'a str,
    /// The key: a CSR or a SubjectPublicKeyInfo.
    pub subject: Subject<'a>,
    /// Subject common name.
    pub common_name: &'a str,
    /// ApplicationUri.
    pub application_uri: &'a str,
    /// DNS names and IP addresses.
    pub host_names: &'a [String],
    /// Validity in days.
    pub validity_days: u32,
}

/// A certificate issued and recorded by [`issue_recorded`].
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The chain, leaf first (the CA certificate second).
    pub chain: Vec<Vec<u8>>,
    /// The leaf's serial number (hex).
    pub serial_number: String,
}

/// Issues a certificate with one of the central's CAs and records it against `device` in one transaction, like a
/// certificate issued for an order (listed, expiring, revocable), without an order item. With `sealed_backup`, the
/// central-made key's backup copy is recorded too.
pub async fn issue_recorded(
    central: &Central,
    what: &Issuance<'_>,
    sealed_backup: Option<Vec<u8>>,
) -> Result<Recorded, CentralError> {
    let device = registry::device(central.db(), what.device).await?;
    if !device.entitled {
        return Err(CentralError::NotEntitled(device.serial));
    }
    let ca = central.ca(what.ca).await?;
    let spki = match what.subject {
        Subject::Csr(csr) => issuer::csr_spki(csr)?,
        Subject::PublicKey(spki) => spki.to_vec(),
        Subject::Certificate(_) => return Err(CentralError::Invalid("a CA issues from a CSR or a public key".into())),
    };
    let algorithm = PublicKey::from_spki(&spki)?.algorithm();
    let subject_bytes = match what.subject {
        Subject::Csr(b) | Subject::PublicKey(b) | Subject::Certificate(b) => b.to_vec(),
    };
    let is_csr = matches!(what.subject, Subject::Csr(_));
    let (cn, uri, hosts, days) =
        (what.common_name.to_owned(), what.application_uri.to_owned(), what.host_names.to_vec(), what.validity_days);
    let ca2 = ca.clone();
    let chain = tokio::task::spawn_blocking(move || {
        let subject = if is_csr { Subject::Csr(&subject_bytes) } else { Subject::PublicKey(&subject_bytes) };
        ca2.issue(&IssueRequest {
            subject,
            common_name: &cn,
            application_uri: &uri,
            host_names: &hosts,
            validity_days: days,
        })
    })
    .await
    .map_err(|e| CentralError::issuer(format!("ca:{}", what.ca), format!("{e}")))??;
    let reference = IssuerRef::Ca(what.ca.to_owned());
    let facts = issuer::check_chain(&reference, &chain, &spki, what.application_uri)?;
    let mut tx = central.db().begin().await?;
    let device_id: i64 = sqlx::query("SELECT id FROM devices WHERE serial = $1")
        .bind(&device.serial)
        .fetch_one(&mut *tx)
        .await?
        .try_get("id")?;
    let ca_id: i64 =
        sqlx::query("SELECT id FROM cas WHERE name = $1").bind(what.ca).fetch_one(&mut *tx).await?.try_get("id")?;
    let row = sqlx::query(
        "INSERT INTO certificates (serial_number, device_id, order_item_id, issuer, ca_id, subject, not_before, \
         not_after, der, chain, created_at) VALUES ($1, $2, NULL, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
    )
    .bind(&facts.serial_number)
    .bind(device_id)
    .bind(reference.to_string())
    .bind(ca_id)
    .bind(&facts.subject)
    .bind(facts.not_before)
    .bind(facts.not_after)
    .bind(chain[0].clone())
    .bind(chain[1..].concat())
    .bind(now())
    .fetch_one(&mut *tx)
    .await?;
    let cert_id: i64 = row.try_get("id")?;
    if let Some(backup) = sealed_backup {
        sqlx::query(
            "INSERT INTO key_backups (device_id, certificate_id, label, key_algorithm, spki, sealed_backup, \
             pending_restore, created_at) VALUES ($1, $2, $3, $4, $5, $6, 0, $7)",
        )
        .bind(device_id)
        .bind(cert_id)
        .bind("gds-push")
        .bind(algorithm.to_string())
        .bind(spki.clone())
        .bind(backup)
        .bind(now())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    tracing::info!(device = %device.serial, ca = what.ca, serial = %facts.serial_number, "certificate issued and recorded");
    Ok(Recorded { chain, serial_number: facts.serial_number })
}

/// Opens an administrator session with the server: discovery over None, then the strongest RSA policy with
/// SignAndEncrypt, the server certificate judged by the central's PKI store.
pub async fn connect(target: &PushTarget) -> Result<Session> {
    let mut channel = ClientOptions::new(SecurityPolicy::None, SecurityMode::None);
    channel.identity = Some(target.client.clone());
    channel.pki = Some(target.pki.clone());
    channel.application_uri = Some(target.client_application_uri.clone());
    channel.timeout = target.timeout;
    let mut options = SessionOptions::new(channel);
    options.discovery = Some(EndpointFilter { min_mode: SecurityMode::SignAndEncrypt, ..EndpointFilter::secure() });
    options.identity = target.user.clone();
    options.application_uri = Some(target.client_application_uri.clone());
    options.application_name = "certvault central".into();
    options.session_name = "certvault central push".into();
    Session::connect(&target.endpoint_url, options)
        .await
        .map_err(|source| PushError::Connect { url: target.endpoint_url.clone(), source })
}

/// Renews the server's certificate (and optionally its trust list); see the module documentation.
pub async fn push(central: &Central, target: &PushTarget, request: &PushRequest) -> Result<PushReport> {
    // The device must exist and be entitled before anything changes on the server.
    let device = registry::device(central.db(), &request.device).await?;
    if !device.entitled {
        return Err(CentralError::NotEntitled(device.serial).into());
    }
    refresh_own_crl(central, target, &request.ca).await?;
    let session = connect(target).await?;
    let result = push_on(central, &session, request, &device).await;
    let _ = session.close().await;
    result
}

async fn push_on(
    central: &Central,
    session: &Session,
    request: &PushRequest,
    device: &registry::Device,
) -> Result<PushReport> {
    let policy = session.security_policy().name().to_owned();
    let current_der = session
        .endpoint()
        .server_certificate
        .value
        .clone()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| PushError::Invalid("the server's endpoint carries no certificate".into()))?;
    let current = Cert::from_der(&current_der)
        .map_err(|e| PushError::Invalid(format!("the server's current certificate: {e}")))?;
    let application_uri = current
        .uris()
        .first()
        .cloned()
        .ok_or_else(|| PushError::Invalid("the server's current certificate names no ApplicationUri".into()))?;
    let mut hosts: Vec<String> = current.dns_names().to_vec();
    hosts.extend(current.ip_addresses().iter().map(|ip| ip.to_string()));
    let common_name = current.common_name().unwrap_or("opcua-server").to_owned();
    let algorithm =
        PublicKey::from_spki(current.spki()).map(|k| k.algorithm()).unwrap_or(KeyAlgorithm::Rsa { bits: 2048 });

    let (recorded, sealed, key_made_by) = match &request.key {
        KeySource::Server => {
            let csr = session.create_signing_request(true, None).await.map_err(refused("CreateSigningRequest"))?;
            let what = Issuance {
                device: &device.serial,
                ca: &request.ca,
                subject: Subject::Csr(&csr),
                common_name: &common_name,
                application_uri: &application_uri,
                host_names: &hosts,
                validity_days: request.validity_days,
            };
            (issue_recorded(central, &what, None).await?, None, "server")
        }
        KeySource::Central { maker, transport } => {
            let transport = match transport {
                Some(t) => t.clone(),
                None => Recipient::new(device_transport_key(device)?),
            };
            let mut recipients = vec![transport];
            if let Some(backup) = &central.backup_spki {
                recipients.push(Recipient::new(backup.clone()));
            }
            let maker = maker.clone();
            let made = tokio::task::spawn_blocking(move || maker.generate_sealed_to(algorithm, &recipients))
                .await
                .map_err(|e| CentralError::KeyMaker(e.to_string()))?
                .map_err(|e| CentralError::KeyMaker(e.to_string()))?;
            let mut sealed = made.sealed.into_iter().map(|b| b.into_vec());
            let for_server = sealed.next().ok_or_else(|| CentralError::KeyMaker("no sealed copy came back".into()))?;
            let backup = sealed.next();
            let what = Issuance {
                device: &device.serial,
                ca: &request.ca,
                subject: Subject::PublicKey(&made.spki),
                common_name: &common_name,
                application_uri: &application_uri,
                host_names: &hosts,
                validity_days: request.validity_days,
            };
            (issue_recorded(central, &what, backup).await?, Some(for_server), "central")
        }
    };
    let issuers: Vec<Vec<u8>> = recorded.chain[1..].to_vec();
    let leaf = recorded.chain[0].clone();
    match &sealed {
        Some(key) => session.update_certificate_with_key(&leaf, &issuers, SEALED_KEY_FORMAT, key).await,
        None => session.update_certificate(&leaf, &issuers).await,
    }
    .map_err(refused("UpdateCertificate"))?;
    session.apply_changes().await.map_err(refused("ApplyChanges"))?;
    tracing::info!(device = %device.serial, serial = %recorded.serial_number, "the server serves the new certificate");
    if request.trust_list {
        push_trust_list_on(central, session, &request.ca).await?;
    }
    Ok(PushReport {
        serial_number: recorded.serial_number,
        sha256: certvault::provision::thumbprint(&leaf),
        certificate: leaf,
        policy,
        key_made_by,
        trust_list: request.trust_list,
    })
}

/// Puts CA `ca`'s current CRL into the central's own trust store: a server certificate the central issued is
/// judged like any other, and with the CA trusted its revocation status must be known.
async fn refresh_own_crl(central: &Central, target: &PushTarget, ca: &str) -> Result<()> {
    let crl = central.crl(ca).await?;
    target.pki.add_crl(&crl, true).map_err(|e| PushError::Invalid(format!("the central's trust store: {e}")))?;
    Ok(())
}

fn device_transport_key(device: &registry::Device) -> Result<Vec<u8>> {
    use base64::Engine;
    let b64 = device.transport_public_key.as_deref().ok_or_else(|| {
        PushError::Invalid(format!(
            "device {} has no transport key on record (it never sent a request): give the server vault's transport \
             key explicitly",
            device.serial
        ))
    })?;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| PushError::Invalid(format!("device {}: stored transport key: {e}", device.serial)))
}

/// Writes CA `ca`'s certificate and current CRL into the server's trust list (its older CRLs are replaced) and
/// applies the change: the way a revocation reaches a running server.
pub async fn push_trust_list(central: &Central, target: &PushTarget, ca: &str) -> Result<()> {
    refresh_own_crl(central, target, ca).await?;
    let session = connect(target).await?;
    let result = push_trust_list_on(central, &session, ca).await;
    let _ = session.close().await;
    result
}

async fn push_trust_list_on(central: &Central, session: &Session, ca_name: &str) -> Result<()> {
    let ca = central.ca(ca_name).await?;
    let crl = central.crl(ca_name).await?;
    let ca_cert = ca.certificate().to_vec();
    let subject = ca_subject(&ca_cert)?;
    let mut list = session.read_trust_list(None).await.map_err(refused("TrustList Read"))?;
    let mut trusted: Vec<ByteString> = list.trusted_certificates.take().unwrap_or_default();
    if !trusted.iter().any(|c| c.value.as_deref() == Some(ca_cert.as_slice())) {
        trusted.push(ByteString::from(ca_cert.clone()));
    }
    let mut crls: Vec<ByteString> = list.trusted_crls.take().unwrap_or_default();
    crls.retain(|c| c.value.as_deref().and_then(crl_issuer).as_deref() != Some(subject.as_slice()));
    crls.push(ByteString::from(crl));
    let new = TrustListDataType {
        specified_lists: TrustListMasks::TRUSTED_CERTIFICATES | TrustListMasks::TRUSTED_CRLS,
        trusted_certificates: Some(trusted),
        trusted_crls: Some(crls),
        issuer_certificates: None,
        issuer_crls: None,
    };
    session.write_trust_list(&new).await.map_err(refused("TrustList Write"))?;
    session.apply_changes().await.map_err(refused("ApplyChanges"))?;
    tracing::info!(ca = ca_name, "CA certificate and CRL pushed into the server's trust list");
    Ok(())
}

fn ca_subject(der: &[u8]) -> Result<Vec<u8>> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|e| PushError::Invalid(format!("CA certificate: {e}")))?;
    Ok(cert.subject().as_raw().to_vec())
}

fn crl_issuer(der: &[u8]) -> Option<Vec<u8>> {
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(der).ok()?;
    Some(crl.issuer().as_raw().to_vec())
}
