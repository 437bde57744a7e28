//! The DefaultApplicationGroup TrustList: a FileType object (Part 5 Annex C) whose content is a UA Binary
//! TrustListDataType (Part 12 §7.8.2), over the server's PKI store.
//!
//! - Open(mode): Read (1), or Write + EraseExisting (6) — the only modes Part 12 allows. A read handle works on a
//!   snapshot taken at Open; a write handle collects bytes until CloseAndUpdate. While a write handle is open,
//!   nothing else may open the file or change the list (BadInvalidState).
//! - Handles belong to the session that opened them: another session's handle, or an unknown or closed one, is
//!   BadInvalidArgument. Reading a write handle is BadNotReadable, writing a read handle BadNotWritable.
//! - A file larger than MaxTrustListSize is BadEncodingLimitsExceeded; an undecodable file or an entry that is not
//!   a certificate or CRL fails CloseAndUpdate (BadDecodingError, BadCertificateInvalid) and changes nothing.
//! - Handles unused for [`ACTIVITY_TIMEOUT`] are closed, so a client that vanished cannot lock the list forever.
//!
//! CloseAndUpdate, AddCertificate and RemoveCertificate change the store's folders at once: the next channel is
//! judged by the new lists, so CloseAndUpdate answers applyChangesRequired = false.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opcua_types::{
    BinaryEncodable, ByteString, ContextOwned, DateTime, MethodId, NodeId, StatusCode, TrustListDataType, VariableId,
    Variant,
};
use parking_lot::Mutex;

use super::authorize;
use super::server_configuration::{arg, bool_arg, bytes_arg, string_arg, State};
use crate::error::{Error, Result};
use crate::pki::{PkiError, PkiStore, TrustListMasks, TrustLists};
use crate::server::access::UserRole;
use crate::server::address_space::{AddressSpace, MethodCall, SharedAddressSpace};

/// A handle unused this long is closed (published as the TrustList's ActivityTimeout).
pub const ACTIVITY_TIMEOUT: Duration = Duration::from_secs(300);

/// Most handles open at once.
const MAX_HANDLES: usize = 16;

/// The FileType open modes of Part 5 §C.2.1.
const MODE_READ: u8 = 1;
const MODE_WRITE_ERASE: u8 = 2 | 4;

/// Bytes one Read returns at most, whatever the client asks for: one response stays well under a message limit.
const MAX_READ: usize = 1024 * 1024;

enum Kind {
    Read(Vec<u8>),
    Write(Vec<u8>),
}

struct Handle {
    session: NodeId,
    kind: Kind,
    position: usize,
    last_used: Instant,
}

#[derive(Default)]
struct Files {
    handles: HashMap<u32, Handle>,
    next: u32,
}

impl Files {
    fn expire(&mut self, now: Instant) {
        self.handles.retain(|id, h| {
            let alive = now.duration_since(h.last_used) < ACTIVITY_TIMEOUT;
            if !alive {
                tracing::info!(handle = id, "trust list handle closed after inactivity");
            }
            alive
        });
    }

    fn writing(&self) -> bool {
        self.handles.values().any(|h| matches!(h.kind, Kind::Write(_)))
    }

    fn get(&mut self, id: u32, session: &NodeId) -> std::result::Result<&mut Handle, StatusCode> {
        match self.handles.get_mut(&id) {
            Some(h) if h.session == *session => {
                h.last_used = Instant::now();
                Ok(h)
            }
            _ => Err(StatusCode::BadInvalidArgument),
        }
    }
}

/// The TrustList file's state: open handles and the store behind it.
pub(crate) struct TrustListFile {
    pki: Arc<PkiStore>,
    space: SharedAddressSpace,
    max_size: u32,
    files: Mutex<Files>,
}

/// Encodes a TrustListDataType as the file content (UA Binary, no encoding id).
pub fn encode_trust_list(list: &TrustListDataType) -> std::result::Result<Vec<u8>, StatusCode> {
    let owned = ContextOwned::default();
    let ctx = owned.context();
    let mut out = Vec::with_capacity(list.byte_len(&ctx));
    list.encode(&mut out, &ctx).map_err(|e| e.status())?;
    Ok(out)
}

/// Decodes the file content of a TrustList.
pub fn decode_trust_list(bytes: &[u8]) -> std::result::Result<TrustListDataType, StatusCode> {
    crate::service::BodyCodec::new().decode_at(bytes, 0).map_err(|_| StatusCode::BadDecodingError)
}

/// The store's lists as TrustListDataType.
pub fn to_data_type(lists: TrustLists) -> TrustListDataType {
    let wrap = |v: Vec<Vec<u8>>| Some(v.into_iter().map(ByteString::from).collect());
    TrustListDataType {
        specified_lists: lists.specified,
        trusted_certificates: wrap(lists.trusted_certificates),
        trusted_crls: wrap(lists.trusted_crls),
        issuer_certificates: wrap(lists.issuer_certificates),
        issuer_crls: wrap(lists.issuer_crls),
    }
}

/// TrustListDataType as the store's lists.
pub fn from_data_type(list: &TrustListDataType) -> TrustLists {
    let unwrap = |v: &Option<Vec<ByteString>>| {
        v.as_deref().unwrap_or_default().iter().map(|b| b.value.clone().unwrap_or_default()).collect()
    };
    TrustLists {
        specified: list.specified_lists,
        trusted_certificates: unwrap(&list.trusted_certificates),
        trusted_crls: unwrap(&list.trusted_crls),
        issuer_certificates: unwrap(&list.issuer_certificates),
        issuer_crls: unwrap(&list.issuer_crls),
    }
}

fn handle_arg(v: &Variant) -> std::result::Result<u32, StatusCode> {
    match v {
        Variant::UInt32(h) => Ok(*h),
        _ => Err(StatusCode::BadInvalidArgument),
    }
}

fn pki_status(e: PkiError) -> StatusCode {
    match e {
        PkiError::Invalid(reason) => {
            tracing::warn!(reason, "trust list entry refused");
            StatusCode::BadCertificateInvalid
        }
        PkiError::Io { .. } => {
            tracing::error!(error = %e, "trust list not written");
            StatusCode::BadInternalError
        }
    }
}

impl TrustListFile {
    pub(crate) fn new(pki: Arc<PkiStore>, space: SharedAddressSpace, max_size: u32) -> Self {
        TrustListFile { pki, space, max_size, files: Mutex::new(Files::default()) }
    }

    fn publish(&self, size: Option<usize>, updated: bool) {
        let open = u16::try_from(self.files.lock().handles.len()).unwrap_or(u16::MAX);
        let set = |id: VariableId, value: Variant| {
            if let Err(e) = self.space.set_value(&id.into(), value) {
                tracing::debug!(error = %e, "TrustList property not set");
            }
        };
        set(VariableId::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_OpenCount, open.into());
        if let Some(size) = size {
            let size = u64::try_from(size).unwrap_or(u64::MAX);
            set(VariableId::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_Size, size.into());
        }
        if updated {
            set(
                VariableId::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_LastUpdateTime,
                Variant::DateTime(Box::new(DateTime::now())),
            );
        }
    }

    fn open(&self, session: &NodeId, mode: u8, masks: TrustListMasks) -> std::result::Result<u32, StatusCode> {
        let mut files = self.files.lock();
        files.expire(Instant::now());
        if files.writing() || files.handles.len() >= MAX_HANDLES {
            return Err(StatusCode::BadInvalidState);
        }
        let (kind, size) = match mode {
            MODE_READ => {
                let content = encode_trust_list(&to_data_type(self.pki.trust_lists(masks)))?;
                let size = content.len();
                (Kind::Read(content), Some(size))
            }
            MODE_WRITE_ERASE if files.handles.is_empty() => (Kind::Write(Vec::new()), None),
            // Part 12: the list cannot be opened for writing while anyone reads it.
            MODE_WRITE_ERASE => return Err(StatusCode::BadInvalidState),
            _ => return Err(StatusCode::BadInvalidArgument),
        };
        files.next = files.next.wrapping_add(1).max(1);
        let id = files.next;
        files.handles.insert(id, Handle { session: session.clone(), kind, position: 0, last_used: Instant::now() });
        drop(files);
        self.publish(size, false);
        tracing::info!(handle = id, mode, "trust list opened");
        Ok(id)
    }

    fn read(&self, session: &NodeId, id: u32, length: i32) -> std::result::Result<Vec<u8>, StatusCode> {
        let length = usize::try_from(length).map_err(|_| StatusCode::BadInvalidArgument)?.min(MAX_READ);
        let mut files = self.files.lock();
        let handle = files.get(id, session)?;
        let Kind::Read(content) = &handle.kind else { return Err(StatusCode::BadNotReadable) };
        let start = handle.position.min(content.len());
        let end = start.saturating_add(length).min(content.len());
        let out = content.get(start..end).unwrap_or_default().to_vec();
        handle.position = end;
        Ok(out)
    }

    fn write(&self, session: &NodeId, id: u32, data: &[u8]) -> std::result::Result<(), StatusCode> {
        let max = usize::try_from(self.max_size).unwrap_or(usize::MAX);
        let mut files = self.files.lock();
        let handle = files.get(id, session)?;
        let position = handle.position;
        let Kind::Write(buffer) = &mut handle.kind else { return Err(StatusCode::BadNotWritable) };
        let end = position.checked_add(data.len()).ok_or(StatusCode::BadEncodingLimitsExceeded)?;
        if end > max {
            return Err(StatusCode::BadEncodingLimitsExceeded);
        }
        if buffer.len() < end {
            buffer.resize(end, 0);
        }
        buffer.get_mut(position..end).ok_or(StatusCode::BadInternalError)?.copy_from_slice(data);
        handle.position = end;
        Ok(())
    }

    fn close(&self, session: &NodeId, id: u32) -> std::result::Result<Option<Vec<u8>>, StatusCode> {
        let mut files = self.files.lock();
        files.get(id, session)?;
        let handle = files.handles.remove(&id).ok_or(StatusCode::BadInvalidArgument)?;
        drop(files);
        self.publish(None, false);
        Ok(match handle.kind {
            Kind::Write(buffer) => Some(buffer),
            Kind::Read(_) => None,
        })
    }

    fn close_and_update(&self, session: &NodeId, id: u32) -> std::result::Result<bool, StatusCode> {
        {
            let mut files = self.files.lock();
            if !matches!(files.get(id, session)?.kind, Kind::Write(_)) {
                return Err(StatusCode::BadInvalidState);
            }
        }
        // The handle closes whatever the outcome (Part 12 §7.8.2.2): a failed update is started again from Open.
        let buffer = self.close(session, id)?.unwrap_or_default();
        let list = decode_trust_list(&buffer)?;
        let lists = from_data_type(&list);
        if lists.byte_len() > usize::try_from(self.max_size).unwrap_or(usize::MAX) {
            return Err(StatusCode::BadEncodingLimitsExceeded);
        }
        self.pki.replace_trust_lists(&lists).map_err(pki_status)?;
        self.publish(Some(buffer.len()), true);
        Ok(false)
    }

    fn unlocked(&self) -> std::result::Result<(), StatusCode> {
        let mut files = self.files.lock();
        files.expire(Instant::now());
        if files.writing() {
            return Err(StatusCode::BadInvalidState);
        }
        Ok(())
    }

    fn add_certificate(&self, der: &[u8], trusted: bool) -> std::result::Result<(), StatusCode> {
        self.unlocked()?;
        self.pki.add_certificate(der, trusted).map_err(pki_status)?;
        self.publish(None, true);
        Ok(())
    }

    fn remove_certificate(&self, thumbprint: &str, trusted: bool) -> std::result::Result<(), StatusCode> {
        self.unlocked()?;
        if !self.pki.remove_certificate(thumbprint, trusted).map_err(pki_status)? {
            return Err(StatusCode::BadInvalidArgument);
        }
        self.publish(None, true);
        Ok(())
    }

    fn position(&self, session: &NodeId, id: u32) -> std::result::Result<u64, StatusCode> {
        let mut files = self.files.lock();
        Ok(u64::try_from(files.get(id, session)?.position).unwrap_or(u64::MAX))
    }

    fn set_position(&self, session: &NodeId, id: u32, position: u64) -> std::result::Result<(), StatusCode> {
        let mut files = self.files.lock();
        let handle = files.get(id, session)?;
        let len = match &handle.kind {
            Kind::Read(c) | Kind::Write(c) => c.len(),
        };
        // Past the end means at the end (Part 5 §C.2.8).
        handle.position = usize::try_from(position).unwrap_or(usize::MAX).min(len);
        Ok(())
    }
}

type Outputs = std::result::Result<Vec<Variant>, StatusCode>;

fn byte_arg(v: &Variant) -> std::result::Result<u8, StatusCode> {
    match v {
        Variant::Byte(b) => Ok(*b),
        _ => Err(StatusCode::BadInvalidArgument),
    }
}

fn dispatch(state: &State, method: &MethodId, call: &MethodCall) -> Outputs {
    let file = state.trust();
    let session = &call.session_id;
    use MethodId as M;
    match method {
        M::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_Open => {
            let mode = byte_arg(arg(call, 0))?;
            Ok(vec![Variant::UInt32(file.open(session, mode, TrustListMasks::ALL)?)])
        }
        M::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_OpenWithMasks => {
            let masks = match arg(call, 0) {
                Variant::UInt32(m) => *m,
                _ => return Err(StatusCode::BadInvalidArgument),
            };
            Ok(vec![Variant::UInt32(file.open(session, MODE_READ, TrustListMasks(masks))?)])
        }
        M::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_Read => {
            let length = match arg(call, 1) {
                Variant::Int32(n) => *n,
                _ => return Err(StatusCode::BadInvalidArgument),
            };
            let data = file.read(session, handle_arg(arg(call, 0))?, length)?;
            Ok(vec![Variant::ByteString(ByteString::from(data))])
        }
        M::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_Write => {
            file.write(session, handle_arg(arg(call, 0))?, &bytes_arg(arg(call, 1))?)?;
            Ok(vec![])
        }
        M::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_Close => {
            file.close(session, handle_arg(arg(call, 0))?)?;
            Ok(vec![])
        }
        M::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_CloseAndUpdate => {
            Ok(vec![Variant::Boolean(file.close_and_update(session, handle_arg(arg(call, 0))?)?)])
        }
        M::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_AddCertificate => {
            file.add_certificate(&bytes_arg(arg(call, 0))?, bool_arg(arg(call, 1))?)?;
            Ok(vec![])
        }
        M::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_RemoveCertificate => {
            file.remove_certificate(&string_arg(arg(call, 0))?, bool_arg(arg(call, 1))?)?;
            Ok(vec![])
        }
        M::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_GetPosition => {
            Ok(vec![Variant::UInt64(file.position(session, handle_arg(arg(call, 0))?)?)])
        }
        M::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_SetPosition => {
            let position = match arg(call, 1) {
                Variant::UInt64(p) => *p,
                _ => return Err(StatusCode::BadInvalidArgument),
            };
            file.set_position(session, handle_arg(arg(call, 0))?, position)?;
            Ok(vec![])
        }
        _ => Err(StatusCode::BadNotImplemented),
    }
}

/// Implements the TrustList's methods and sets its fixed properties.
pub(crate) fn install(space: &mut AddressSpace, state: &Arc<State>) -> Result<()> {
    use MethodId as M;
    let methods = [
        M::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_Open,
        M::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_OpenWithMasks,
        M::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_Read,
        M::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_Write,
        M::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_Close,
        M::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_CloseAndUpdate,
        M::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_AddCertificate,
        M::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_RemoveCertificate,
        M::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_GetPosition,
        M::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_SetPosition,
    ];
    for method in methods {
        let state = state.clone();
        space
            .implement_method(&method.into(), UserRole::Administrator, move |call| {
                let state = state.clone();
                async move {
                    authorize(&call)?;
                    dispatch(&state, &method, &call)
                }
            })
            .map_err(|e| {
                tracing::error!(?method, error = %e, "TrustList method missing");
                Error::InvalidState("namespace 0 lacks the TrustList methods GDS push needs")
            })?;
    }
    let now = DateTime::now();
    let timeout_ms = ACTIVITY_TIMEOUT.as_secs_f64() * 1000.0;
    let properties: [(VariableId, Variant); 5] = [
        (VariableId::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_Writable, true.into()),
        (VariableId::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_UserWritable, true.into()),
        (VariableId::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_OpenCount, 0u16.into()),
        (VariableId::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_Size, 0u64.into()),
        (
            VariableId::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_ActivityTimeout,
            timeout_ms.into(),
        ),
    ];
    for (id, value) in properties {
        let id: NodeId = id.into();
        if let Err(e) = space.set_value_at(&id, value, now) {
            tracing::debug!(%id, error = %e, "TrustList property not set");
        }
    }
    Ok(())
}
