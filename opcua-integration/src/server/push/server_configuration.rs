//! The ServerConfiguration methods (CreateSigningRequest, UpdateCertificate, ApplyChanges, GetRejectedList) and
//! properties, installed on namespace 0's ServerConfiguration object.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use certvault::csr::CsrRequest;
use certvault::{KeySelector, SharedKey};
use opcua_types::{
    ByteString, DateTime, MethodId, NodeId, ObjectId, ObjectTypeId, StatusCode, UAString, VariableId, Variant,
};
use parking_lot::Mutex;

use super::trust_list::TrustListFile;
use super::{authorize, PushConfig, SEALED_KEY_FORMAT};
use crate::channel::asymmetric::LocalIdentity;
use crate::channel::policy::SecurityPolicy;
use crate::error::{Error, Result};
use crate::pki::{check_chain_signatures, check_own_certificate, limits_for, Cert, PkiStore, Role};
use crate::server::access::UserRole;
use crate::server::address_space::{MethodCall, SharedAddressSpace};
use crate::server::services::Services;

/// What the push methods work on, gathered by the server at start.
pub(crate) struct PushContext {
    pub(crate) config: PushConfig,
    pub(crate) services: Services,
    pub(crate) pki: Arc<PkiStore>,
    pub(crate) application_uri: String,
    pub(crate) host: String,
    pub(crate) policies: Vec<SecurityPolicy>,
}

/// Between CreateSigningRequest/UpdateCertificate and ApplyChanges.
#[derive(Default)]
struct Pending {
    /// A key made by CreateSigningRequest with regeneratePrivateKey, waiting for its certificate.
    new_key: Option<SharedKey>,
    /// The identity UpdateCertificate accepted, taking effect at ApplyChanges.
    staged: Option<LocalIdentity>,
}

pub(crate) struct State {
    ctx: PushContext,
    pending: Mutex<Pending>,
    labels: AtomicU32,
    trust: TrustListFile,
}

/// Installs the handlers and sets the properties. Fails when namespace 0 lacks the ServerConfiguration nodes.
pub(crate) fn install(space: &SharedAddressSpace, ctx: PushContext) -> Result<()> {
    let max = ctx.config.max_trust_list_size;
    let state = Arc::new(State {
        trust: TrustListFile::new(ctx.pki.clone(), space.clone(), max),
        ctx,
        pending: Mutex::new(Pending::default()),
        labels: AtomicU32::new(0),
    });
    let mut guard = space.write_guard();
    let bind = |space: &mut crate::server::address_space::AddressSpace, id: MethodId, f: Handler| {
        let state = state.clone();
        space
            .implement_method(&id.into(), UserRole::Administrator, move |call| {
                let state = state.clone();
                async move {
                    authorize(&call)?;
                    f(state, call).await
                }
            })
            .map_err(|e| {
                // Only a namespace 0 without the standard nodes fails here, at start.
                tracing::error!(method = ?id, error = %e, "GDS push method missing");
                Error::InvalidState("namespace 0 lacks the ServerConfiguration methods GDS push needs")
            })
    };
    bind(&mut guard, MethodId::ServerConfiguration_CreateSigningRequest, |s, c| {
        Box::pin(create_signing_request(s, c))
    })?;
    bind(&mut guard, MethodId::ServerConfiguration_UpdateCertificate, |s, c| Box::pin(update_certificate(s, c)))?;
    bind(&mut guard, MethodId::ServerConfiguration_ApplyChanges, |s, c| Box::pin(apply_changes(s, c)))?;
    bind(&mut guard, MethodId::ServerConfiguration_GetRejectedList, |s, c| Box::pin(get_rejected_list(s, c)))?;
    // CancelChanges (Part 12 1.05) is bound when this namespace 0 has it (async-opcua 0.19 does).
    if guard.contains(&MethodId::ServerConfiguration_CancelChanges.into()) {
        bind(&mut guard, MethodId::ServerConfiguration_CancelChanges, |s, c| Box::pin(cancel_changes(s, c)))?;
    }
    // The group's own GetRejectedList (Part 12 1.05) is not in every namespace 0 (async-opcua 0.19 lacks the node).
    let group_rejected: NodeId =
        MethodId::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_GetRejectedList.into();
    if guard.contains(&group_rejected) {
        bind(
            &mut guard,
            MethodId::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_GetRejectedList,
            |s, c| Box::pin(get_rejected_list(s, c)),
        )?;
    }
    super::trust_list::install(&mut guard, &state)?;
    let now = DateTime::now();
    let formats: Vec<UAString> = vec![SEALED_KEY_FORMAT.into()];
    let capabilities: Vec<UAString> = vec!["NA".into()];
    let types: Vec<NodeId> = vec![ObjectTypeId::RsaSha256ApplicationCertificateType.into()];
    let properties: [(VariableId, Variant); 6] = [
        (VariableId::ServerConfiguration_SupportedPrivateKeyFormats, formats.into()),
        (VariableId::ServerConfiguration_ServerCapabilities, capabilities.into()),
        (VariableId::ServerConfiguration_MaxTrustListSize, Variant::UInt32(max)),
        (VariableId::ServerConfiguration_MulticastDnsEnabled, Variant::Boolean(false)),
        (VariableId::ServerConfiguration_HasSecureElement, Variant::Boolean(true)),
        (VariableId::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_CertificateTypes, types.into()),
    ];
    for (id, value) in properties {
        let id: NodeId = id.into();
        if let Err(e) = guard.set_value_at(&id, value, now) {
            // A namespace 0 without the property still serves the methods; say what is missing.
            tracing::warn!(%id, error = %e, "ServerConfiguration property not set");
        }
    }
    tracing::info!("GDS push enabled: ServerConfiguration methods installed");
    Ok(())
}

/// One ServerConfiguration method's implementation, run after [`authorize`].
type Handler = fn(
    Arc<State>,
    MethodCall,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = std::result::Result<Vec<Variant>, StatusCode>> + Send>,
>;

impl State {
    pub(crate) fn trust(&self) -> &TrustListFile {
        &self.trust
    }
}

// ---- argument helpers: the address space checked the types against InputArguments; Empty stands for null.

pub(crate) fn arg(call: &MethodCall, i: usize) -> &Variant {
    call.inputs.get(i).unwrap_or(&Variant::Empty)
}

pub(crate) fn node_arg(v: &Variant) -> std::result::Result<NodeId, StatusCode> {
    match v {
        Variant::NodeId(id) => Ok((**id).clone()),
        Variant::Empty => Ok(NodeId::null()),
        _ => Err(StatusCode::BadInvalidArgument),
    }
}

pub(crate) fn bytes_arg(v: &Variant) -> std::result::Result<Vec<u8>, StatusCode> {
    match v {
        Variant::ByteString(b) => Ok(b.value.clone().unwrap_or_default()),
        Variant::Empty => Ok(Vec::new()),
        _ => Err(StatusCode::BadInvalidArgument),
    }
}

pub(crate) fn string_arg(v: &Variant) -> std::result::Result<String, StatusCode> {
    match v {
        Variant::String(s) => Ok(s.as_ref().to_owned()),
        Variant::Empty => Ok(String::new()),
        _ => Err(StatusCode::BadInvalidArgument),
    }
}

pub(crate) fn bool_arg(v: &Variant) -> std::result::Result<bool, StatusCode> {
    match v {
        Variant::Boolean(b) => Ok(*b),
        _ => Err(StatusCode::BadInvalidArgument),
    }
}

fn bytes_array_arg(v: &Variant) -> std::result::Result<Vec<Vec<u8>>, StatusCode> {
    match v {
        Variant::Array(a) => a.values.iter().map(bytes_arg).collect(),
        Variant::Empty => Ok(Vec::new()),
        _ => Err(StatusCode::BadInvalidArgument),
    }
}

/// Only the DefaultApplicationGroup and RSA application certificate types exist here (null means those).
fn check_group_and_type(group: &NodeId, certificate_type: &NodeId) -> std::result::Result<(), StatusCode> {
    let default_group: NodeId = ObjectId::ServerConfiguration_CertificateGroups_DefaultApplicationGroup.into();
    if !group.is_null() && *group != default_group {
        return Err(StatusCode::BadInvalidArgument);
    }
    let accepted: [NodeId; 3] = [
        ObjectTypeId::ApplicationCertificateType.into(),
        ObjectTypeId::RsaSha256ApplicationCertificateType.into(),
        ObjectTypeId::RsaMinApplicationCertificateType.into(),
    ];
    if !certificate_type.is_null() && !accepted.contains(certificate_type) {
        return Err(StatusCode::BadInvalidArgument);
    }
    Ok(())
}

/// Runs a vault operation on a blocking thread: the backends block on sockets and tokens.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, certvault::VaultError> + Send + 'static,
) -> std::result::Result<T, StatusCode> {
    tokio::task::spawn_blocking(f).await.map_err(|_| StatusCode::BadInternalError)?.map_err(|e| {
        tracing::error!(error = %e, "vault operation failed");
        StatusCode::BadInternalError
    })
}

/// The subject of a CSR: the requested subject name (`CN=...,O=...` or `/CN=.../O=...`), or the current
/// certificate's; the subjectAltNames (ApplicationUri, host names, addresses) always come from the current
/// certificate, so a renewed certificate keeps naming this application.
fn csr_request(subject_name: &str, current: &Cert) -> CsrRequest {
    let parse = |text: &str| -> (Option<String>, Option<String>) {
        let mut cn = None;
        let mut o = None;
        for part in text.split([',', '/']) {
            if let Some((k, v)) = part.split_once('=') {
                match k.trim().to_ascii_uppercase().as_str() {
                    "CN" => cn = Some(v.trim().to_owned()),
                    "O" => o = Some(v.trim().to_owned()),
                    _ => {}
                }
            }
        }
        (cn, o)
    };
    let (cn, o) = if subject_name.trim().is_empty() { parse(current.subject()) } else { parse(subject_name) };
    CsrRequest {
        common_name: cn.or_else(|| current.common_name().map(str::to_owned)).unwrap_or_else(|| "opcua-server".into()),
        organization: o,
        application_uri: current.uris().first().cloned(),
        dns_names: current.dns_names().to_vec(),
        ip_addresses: current.ip_addresses().to_vec(),
    }
}

fn current_identity(state: &State) -> std::result::Result<LocalIdentity, StatusCode> {
    state.ctx.services.identity().current().ok_or(StatusCode::BadInternalError)
}

/// CreateSigningRequest(CertificateGroupId, CertificateTypeId, SubjectName, RegeneratePrivateKey, Nonce) ->
/// CertificateRequest (DER PKCS#10).
async fn create_signing_request(state: Arc<State>, call: MethodCall) -> std::result::Result<Vec<Variant>, StatusCode> {
    check_group_and_type(&node_arg(arg(&call, 0))?, &node_arg(arg(&call, 1))?)?;
    let subject_name = string_arg(arg(&call, 2))?;
    let regenerate = bool_arg(arg(&call, 3))?;
    let nonce = bytes_arg(arg(&call, 4))?;
    if regenerate && nonce.len() < 32 {
        // Part 12 wants caller entropy with a new key; the vault makes the key itself, but the rule still says
        // whether the caller follows the protocol.
        return Err(StatusCode::BadInvalidArgument);
    }
    let current = current_identity(&state)?;
    let cert = Cert::from_der(current.certificate()).map_err(|_| StatusCode::BadInternalError)?;
    let request = csr_request(&subject_name, &cert);
    let store = state.ctx.config.key_store.clone();
    let key = if regenerate {
        let info = current.key().info().clone();
        let serial = state.labels.fetch_add(1, Ordering::Relaxed);
        let label = format!("{}.gds-{}-{serial}", base_label(&info.label), DateTime::now().ticks());
        let (algorithm, policy) = (info.algorithm, info.policy.clone());
        let made_label = label.clone();
        let store2 = store.clone();
        let key = blocking(move || {
            let made = store2.generate(&made_label, algorithm, policy)?;
            store2.key(&KeySelector::Id(made.id))
        })
        .await?;
        tracing::info!(label, "CreateSigningRequest: new key made inside the vault");
        key
    } else {
        current.key().clone()
    };
    let selector = KeySelector::Id(key.info().id.clone());
    let csr = blocking(move || store.create_csr(&selector, &request)).await?;
    let mut pending = state.pending.lock();
    if regenerate {
        if let Some(old) = pending.new_key.replace(key) {
            tracing::info!(label = %old.info().label, "an earlier pending key is superseded (it stays in the vault, unused)");
        }
    } else {
        pending.new_key = None;
    }
    Ok(vec![Variant::ByteString(ByteString::from(csr))])
}

/// A label without an earlier `.gds-...` suffix, so renewals do not grow the label.
fn base_label(label: &str) -> &str {
    label.split(".gds-").next().unwrap_or(label)
}

/// UpdateCertificate(CertificateGroupId, CertificateTypeId, Certificate, IssuerCertificates, PrivateKeyFormat,
/// PrivateKey) -> ApplyChangesRequired.
async fn update_certificate(state: Arc<State>, call: MethodCall) -> std::result::Result<Vec<Variant>, StatusCode> {
    check_group_and_type(&node_arg(arg(&call, 0))?, &node_arg(arg(&call, 1))?)?;
    let certificate = bytes_arg(arg(&call, 2))?;
    let issuers = bytes_array_arg(arg(&call, 3))?;
    let format = string_arg(arg(&call, 4))?;
    let private_key = bytes_arg(arg(&call, 5))?;
    let leaf = Cert::from_der(&certificate).map_err(|e| {
        tracing::warn!("UpdateCertificate: not a certificate: {e}");
        StatusCode::BadCertificateInvalid
    })?;
    let mut parsed = vec![leaf.clone()];
    for issuer in &issuers {
        parsed.push(Cert::from_der(issuer).map_err(|_| StatusCode::BadCertificateInvalid)?);
    }
    check_chain_signatures(&parsed).map_err(|e| {
        tracing::warn!("UpdateCertificate: the issuer certificates do not sign the chain: {e}");
        StatusCode::BadSecurityChecksFailed
    })?;
    let store = state.ctx.config.key_store.clone();
    let key: SharedKey = if !format.is_empty() || !private_key.is_empty() {
        if format != SEALED_KEY_FORMAT {
            // PEM and PFX would put a private key into this process's memory: never.
            tracing::warn!(format, "UpdateCertificate: private key format refused");
            return Err(StatusCode::BadNotSupported);
        }
        let Some(importer) = state.ctx.config.sealed_key_importer.clone() else {
            tracing::warn!("UpdateCertificate: sealed private keys are not enabled on this server");
            return Err(StatusCode::BadNotSupported);
        };
        let serial = state.labels.fetch_add(1, Ordering::Relaxed);
        let current = current_identity(&state)?;
        let label = format!("{}.gds-{}-{serial}", base_label(&current.key().info().label), DateTime::now().ticks());
        let store = store.clone();
        let cert = certificate.clone();
        let imported = tokio::task::spawn_blocking(move || importer.import_sealed(&private_key, &label, &cert))
            .await
            .map_err(|_| StatusCode::BadInternalError)?;
        let info = imported.map_err(|e| {
            let status = super::sealed_key_status(&e);
            tracing::warn!(%status, "UpdateCertificate: sealed private key refused: {e}");
            status
        })?;
        blocking(move || store.key(&KeySelector::Id(info.id))).await?
    } else {
        let pending = state.pending.lock().new_key.clone();
        let current = current_identity(&state)?;
        let spki_of = |k: &SharedKey| certvault::PublicKey::from_spki(&k.info().spki_der).ok();
        let cert_key = certvault::PublicKey::from_spki(leaf.spki()).map_err(|_| StatusCode::BadCertificateInvalid)?;
        let same = |k: &SharedKey| {
            spki_of(k).is_some_and(|p| p.algorithm() == cert_key.algorithm() && p.raw_bytes() == cert_key.raw_bytes())
        };
        match (pending, current.key().clone()) {
            (Some(p), _) if same(&p) => p,
            (_, c) if same(&c) => c,
            _ => {
                tracing::warn!("UpdateCertificate: the certificate matches neither the pending nor the current key");
                return Err(StatusCode::BadSecurityChecksFailed);
            }
        }
    };
    for &policy in &state.ctx.policies {
        if let certvault::KeyAlgorithm::Rsa { bits } = key.info().algorithm {
            policy.check_key_bits(bits).map_err(|_| StatusCode::BadCertificatePolicyCheckFailed)?;
        }
        check_own_certificate(
            &certificate,
            &key.info().spki_der,
            &state.ctx.application_uri,
            &[state.ctx.host.as_str()],
            Role::Server,
            &limits_for(policy),
        )
        .map_err(|e| {
            tracing::warn!(policy = policy.name(), "UpdateCertificate: certificate refused: {e}");
            StatusCode::BadCertificateInvalid
        })?;
    }
    let mut chain = certificate.clone();
    for issuer in &issuers {
        chain.extend_from_slice(issuer);
    }
    let identity = LocalIdentity::new(key.clone(), chain.clone()).map_err(|_| StatusCode::BadCertificateInvalid)?;
    let mut ders = vec![certificate];
    ders.extend(issuers);
    let selector = KeySelector::Id(key.info().id.clone());
    blocking(move || store.store_cert_chain(&selector, ders)).await?;
    if let Some(file) = state.ctx.config.certificate_file.clone() {
        write_certificate_file(&file, &chain).await?;
    }
    tracing::info!(key = %key.info().label, subject = leaf.subject(), "UpdateCertificate: staged until ApplyChanges");
    state.pending.lock().staged = Some(identity);
    Ok(vec![Variant::Boolean(true)])
}

/// Replaces the certificate file through a temporary file and a rename, so a reader never sees half a file.
async fn write_certificate_file(file: &std::path::Path, chain: &[u8]) -> std::result::Result<(), StatusCode> {
    let tmp = file.with_extension("der.tmp");
    let (file, chain) = (file.to_path_buf(), chain.to_vec());
    tokio::task::spawn_blocking(move || std::fs::write(&tmp, &chain).and_then(|()| std::fs::rename(&tmp, &file)))
        .await
        .map_err(|_| StatusCode::BadInternalError)?
        .map_err(|e| {
            tracing::error!(error = %e, "UpdateCertificate: certificate file not written");
            StatusCode::BadInternalError
        })
}

/// ApplyChanges: the staged identity takes effect for new channels and sessions.
async fn apply_changes(state: Arc<State>, _call: MethodCall) -> std::result::Result<Vec<Variant>, StatusCode> {
    let staged = {
        let mut pending = state.pending.lock();
        let staged = pending.staged.take();
        if staged.is_some() {
            pending.new_key = None;
        }
        staged
    };
    match staged {
        Some(identity) => {
            tracing::info!(key = %identity.key().info().label, "ApplyChanges: new channels use the new certificate");
            state.ctx.services.replace_identity(identity);
        }
        None => tracing::info!("ApplyChanges: nothing staged"),
    }
    Ok(vec![])
}

/// CancelChanges: forgets a staged certificate and a pending key (which stays in the vault, unused).
async fn cancel_changes(state: Arc<State>, _call: MethodCall) -> std::result::Result<Vec<Variant>, StatusCode> {
    let mut pending = state.pending.lock();
    let (staged, key) = (pending.staged.take(), pending.new_key.take());
    if staged.is_some() || key.is_some() {
        tracing::info!("CancelChanges: the staged certificate and pending key are dropped");
    }
    Ok(vec![])
}

/// GetRejectedList -> Certificates: the certificates in the PKI store's rejected folder.
async fn get_rejected_list(state: Arc<State>, _call: MethodCall) -> std::result::Result<Vec<Variant>, StatusCode> {
    let pki = state.ctx.pki.clone();
    let certs = tokio::task::spawn_blocking(move || pki.rejected_certificates())
        .await
        .map_err(|_| StatusCode::BadInternalError)?;
    let list: Vec<ByteString> = certs.iter().map(|c| ByteString::from(c.der().to_vec())).collect();
    Ok(vec![list.into()])
}
