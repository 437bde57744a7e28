//! The device's side of the exchange: make a request file, apply an update file and answer with a receipt, on a
//! vaultd container ([`DaemonClient`]) or a PKCS#11 token ([`crate::pkcs11::Pkcs11Token`]). `certvault request`
//! and `certvault apply` are thin wrappers around these.

use super::{ProvisionError, Receipt, Request, RequestItem, Result, DEVICE_KEY_LABEL};
use crate::csr::CsrRequest;
use crate::key::{KeyAlgorithm, KeyPolicy, KeySelector};
use crate::pkcs11::Pkcs11Token;
use crate::protocol::{ApplyReport, DeviceState, RequestContext};
use crate::provision::OaepHash;
use crate::store::KeyStore;
use crate::DaemonClient;

/// A vault that can be a provisioning device: it holds the device identity, the counter, the outstanding nonce and
/// the pinned central, and applies updates inside.
pub trait DeviceVault: KeyStore {
    /// Makes the device identity key and the transport key inside, if missing.
    fn device_init(&self) -> crate::Result<DeviceState>;
    /// The device's keys, counter, outstanding request and pinned central.
    fn device_info(&self) -> crate::Result<DeviceState>;
    /// Makes and remembers a fresh request nonce; also says which OAEP hash the transport key unwraps with.
    fn begin_request(&self) -> crate::Result<(RequestContext, OaepHash)>;
    /// Verifies an update and stores what it brings, inside the vault.
    fn apply_update(&self, update: &[u8]) -> crate::Result<ApplyReport>;
}

impl DeviceVault for DaemonClient {
    fn device_init(&self) -> crate::Result<DeviceState> {
        DaemonClient::device_init(self)
    }
    fn device_info(&self) -> crate::Result<DeviceState> {
        DaemonClient::device_info(self)
    }
    fn begin_request(&self) -> crate::Result<(RequestContext, OaepHash)> {
        let ctx = DaemonClient::begin_request(self)?;
        let oaep = ctx.transport_oaep;
        Ok((ctx, oaep))
    }
    fn apply_update(&self, update: &[u8]) -> crate::Result<ApplyReport> {
        DaemonClient::apply_update(self, update)
    }
}

impl DeviceVault for Pkcs11Token {
    fn device_init(&self) -> crate::Result<DeviceState> {
        Pkcs11Token::device_init(self)
    }
    fn device_info(&self) -> crate::Result<DeviceState> {
        Pkcs11Token::device_info(self)
    }
    fn begin_request(&self) -> crate::Result<(RequestContext, OaepHash)> {
        Pkcs11Token::begin_request(self)
    }
    fn apply_update(&self, update: &[u8]) -> crate::Result<ApplyReport> {
        Pkcs11Token::apply_update(self, update)
    }
}

/// Default validity in days of the certificate a `self-signed` item carries (`days=` changes it). The central
/// refuses one that outlives the order's validity.
pub const SELF_SIGNED_DAYS: u32 = 365;

/// One certificate to ask for, as the operator says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemSpec {
    /// Key label.
    pub label: String,
    /// Key algorithm.
    pub algorithm: KeyAlgorithm,
    /// ApplicationUri.
    pub application_uri: String,
    /// Host names.
    pub hosts: Vec<String>,
    /// Where the key is made.
    pub origin: super::KeyOrigin,
    /// Validity in days of the self-signed certificate of a `self-signed` item.
    pub self_signed_days: u32,
}

impl std::str::FromStr for ItemSpec {
    type Err = String;

    /// Parses `label=opcua,alg=rsa-2048,uri=urn:x,host=machine-a,host=10.0.0.1,origin=device` (origin: device,
    /// central or self-signed, default device; alg defaults to rsa2048; `label` and `uri` are required).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (mut label, mut alg, mut uri, mut hosts, mut origin) =
            (None, KeyAlgorithm::Rsa { bits: 2048 }, None, Vec::new(), super::KeyOrigin::Device);
        let mut days = SELF_SIGNED_DAYS;
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| format!("{part:?} is not key=value"))?;
            match k.trim() {
                "label" => label = Some(v.to_string()),
                "alg" | "algorithm" => alg = v.parse().map_err(|e| format!("{e}"))?,
                "uri" => uri = Some(v.to_string()),
                "host" => hosts.push(v.to_string()),
                "days" => {
                    days = v.parse().ok().filter(|d| *d > 0).ok_or_else(|| format!("days={v:?}: a number >= 1"))?
                }
                "origin" => {
                    origin = match v {
                        "device" => super::KeyOrigin::Device,
                        "central" => super::KeyOrigin::Central,
                        "self-signed" => super::KeyOrigin::SelfSigned,
                        o => return Err(format!("origin {o:?}: use device, central or self-signed")),
                    }
                }
                other => return Err(format!("unknown item field {other:?} (label, alg, uri, host, origin, days)")),
            }
        }
        Ok(ItemSpec {
            label: label.ok_or("an item needs label=...")?,
            algorithm: alg,
            application_uri: uri.ok_or("an item needs uri=... (the ApplicationUri)")?,
            hosts,
            origin,
            self_signed_days: days,
        })
    }
}

/// Makes a signed request file for `items`. Device-origin items use the key of that label, made inside the vault
/// now if it does not exist yet, and carry a CSR signed inside. The vault remembers the request's nonce.
pub fn make_request(client: &dyn DeviceVault, items: &[ItemSpec]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for spec in items {
        if super::is_reserved_label(&spec.label) {
            return Err(ProvisionError::Invalid {
                what: "request",
                why: format!("label {:?} is reserved", spec.label),
            });
        }
        let (csr, certificate) = match spec.origin {
            super::KeyOrigin::Central => (None, None),
            super::KeyOrigin::Device | super::KeyOrigin::SelfSigned => {
                let sel = KeySelector::Label(spec.label.clone());
                let info = match client.key(&sel) {
                    Ok(k) => k.info().clone(),
                    Err(crate::VaultError::KeyNotFound(_)) => {
                        client.generate(&spec.label, spec.algorithm, KeyPolicy::default())?
                    }
                    Err(e) => return Err(e.into()),
                };
                if info.algorithm != spec.algorithm {
                    return Err(ProvisionError::Invalid {
                        what: "request",
                        why: format!(
                            "key {:?} exists as {}, not {}: choose another label or algorithm",
                            spec.label, info.algorithm, spec.algorithm
                        ),
                    });
                }
                let ip_addresses = spec.hosts.iter().filter_map(|h| h.parse().ok()).collect();
                let dns_names = spec.hosts.iter().filter(|h| h.parse::<std::net::IpAddr>().is_err()).cloned().collect();
                let request = CsrRequest {
                    common_name: spec.hosts.first().cloned().unwrap_or_else(|| spec.label.clone()),
                    organization: None,
                    application_uri: Some(spec.application_uri.clone()),
                    dns_names,
                    ip_addresses,
                };
                if spec.origin == super::KeyOrigin::SelfSigned {
                    let key = client.key(&sel)?;
                    let valid_for = std::time::Duration::from_secs(u64::from(spec.self_signed_days) * 86_400);
                    (None, Some(crate::csr::self_signed(key.as_ref(), &request, valid_for)?))
                } else {
                    (Some(client.create_csr(&sel, &request)?), None)
                }
            }
        };
        out.push(RequestItem {
            label: spec.label.clone(),
            algorithm: spec.algorithm,
            application_uri: spec.application_uri.clone(),
            hosts: spec.hosts.clone(),
            key_origin: spec.origin,
            csr,
            certificate,
        });
    }
    let (ctx, oaep) = client.begin_request()?;
    let mut request = Request::new(
        ctx.serial,
        ctx.device_key.into_vec(),
        ctx.transport_key.into_vec(),
        ctx.nonce.into_vec(),
        ctx.counter,
        out,
    );
    request.transport_oaep = oaep;
    let device_key = client.key(&KeySelector::Label(DEVICE_KEY_LABEL.into()))?;
    request.sign(device_key.as_ref())
}

/// Applies an update file inside the vault and returns the report and the signed receipt file.
pub fn apply_update(client: &dyn DeviceVault, update: &[u8]) -> Result<(ApplyReport, Vec<u8>)> {
    let report = client.apply_update(update)?;
    let device_key = client.key(&KeySelector::Label(DEVICE_KEY_LABEL.into()))?;
    let receipt = Receipt::new(
        report.serial.clone(),
        device_key.info().spki_der.clone(),
        report.counter,
        report.nonce.to_vec(),
        report.certificates.clone(),
    )
    .sign(device_key.as_ref())?;
    Ok((report, receipt))
}
