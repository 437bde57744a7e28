//! Typed calls of a server's GDS push methods (Part 12 §7.7): what a certificate manager uses to renew a running
//! server's certificate and trust list. The session must be an administrator's over SignAndEncrypt.
//!
//! ```no_run
//! # async fn renew(session: &certvault_opcua::client::Session) -> certvault_opcua::Result<()> {
//! let csr = session.create_signing_request(true, None).await?; // a new key, made inside the server's vault
//! let certificate: Vec<u8> = sign_somewhere(&csr);
//! session.update_certificate(&certificate, &[]).await?;
//! session.apply_changes().await?; // new connections see the new certificate
//! # Ok(()) }
//! # fn sign_somewhere(_: &[u8]) -> Vec<u8> { Vec::new() }
//! ```

use opcua_types::{ByteString, MethodId, NodeId, ObjectId, TrustListDataType, UAString, Variant};

use super::Session;
use crate::error::{Error, Result};
use crate::pki::TrustListMasks;
use crate::server::push::trust_list::{decode_trust_list, encode_trust_list};

/// Bytes per TrustList Read or Write call.
const CHUNK: usize = 64 * 1024;

/// The TrustList object of the DefaultApplicationGroup.
fn trust_list() -> NodeId {
    ObjectId::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList.into()
}

fn server_configuration() -> NodeId {
    ObjectId::ServerConfiguration.into()
}

fn unexpected(what: &str) -> Error {
    Error::Decoding(format!("{what}: unexpected output arguments"))
}

/// A ByteString[] output (null or missing: empty).
fn byte_strings(value: Option<&Variant>) -> Option<Vec<Vec<u8>>> {
    match value {
        Some(Variant::Array(a)) => Some(
            a.values
                .iter()
                .filter_map(|v| match v {
                    Variant::ByteString(b) => Some(b.value.clone().unwrap_or_default()),
                    _ => None,
                })
                .collect(),
        ),
        Some(Variant::Empty) | None => Some(Vec::new()),
        _ => None,
    }
}

impl Session {
    /// CreateSigningRequest for the DefaultApplicationGroup's RSA certificate: a DER PKCS#10 request. With
    /// `regenerate_key` the server makes a new key (in its vault) that serves only after UpdateCertificate and
    /// ApplyChanges; `subject_name` (e.g. `CN=machine-a, O=Example`) defaults to the current certificate's.
    pub async fn create_signing_request(&self, regenerate_key: bool, subject_name: Option<&str>) -> Result<Vec<u8>> {
        let nonce = crate::session::new_nonce()?;
        let args = vec![
            Variant::from(NodeId::from(ObjectId::ServerConfiguration_CertificateGroups_DefaultApplicationGroup)),
            Variant::from(NodeId::from(opcua_types::ObjectTypeId::RsaSha256ApplicationCertificateType)),
            Variant::String(UAString::from(subject_name.unwrap_or_default())),
            Variant::Boolean(regenerate_key),
            Variant::ByteString(ByteString::from(nonce.to_vec())),
        ];
        let out = self
            .call_method(&server_configuration(), &MethodId::ServerConfiguration_CreateSigningRequest.into(), args)
            .await?;
        match out.first() {
            Some(Variant::ByteString(b)) => Ok(b.value.clone().unwrap_or_default()),
            _ => Err(unexpected("CreateSigningRequest")),
        }
    }

    /// UpdateCertificate with a certificate (DER) and its issuers, for the key of the last CreateSigningRequest or
    /// the current key. Returns applyChangesRequired.
    pub async fn update_certificate(&self, certificate: &[u8], issuers: &[Vec<u8>]) -> Result<bool> {
        self.update_certificate_with_key(certificate, issuers, "", &[]).await
    }

    /// UpdateCertificate with a private key in `format`. Servers of certvault accept only "CertVaultSealed" (a key
    /// sealed to their vault); this process never holds a plain private key to send.
    pub async fn update_certificate_with_key(
        &self,
        certificate: &[u8],
        issuers: &[Vec<u8>],
        format: &str,
        private_key: &[u8],
    ) -> Result<bool> {
        let issuers: Vec<ByteString> = issuers.iter().map(|i| ByteString::from(i.clone())).collect();
        let key = if private_key.is_empty() { ByteString::null() } else { ByteString::from(private_key.to_vec()) };
        let args = vec![
            Variant::from(NodeId::from(ObjectId::ServerConfiguration_CertificateGroups_DefaultApplicationGroup)),
            Variant::from(NodeId::from(opcua_types::ObjectTypeId::RsaSha256ApplicationCertificateType)),
            Variant::ByteString(ByteString::from(certificate.to_vec())),
            Variant::from(issuers),
            Variant::String(UAString::from(format)),
            Variant::ByteString(key),
        ];
        let out = self
            .call_method(&server_configuration(), &MethodId::ServerConfiguration_UpdateCertificate.into(), args)
            .await?;
        match out.first() {
            Some(Variant::Boolean(b)) => Ok(*b),
            _ => Err(unexpected("UpdateCertificate")),
        }
    }

    /// ApplyChanges: the updated certificate takes effect for new connections.
    pub async fn apply_changes(&self) -> Result<()> {
        self.call_method(&server_configuration(), &MethodId::ServerConfiguration_ApplyChanges.into(), vec![]).await?;
        Ok(())
    }

    /// CancelChanges: drops a certificate staged by UpdateCertificate (and a key made for it) before ApplyChanges.
    pub async fn cancel_changes(&self) -> Result<()> {
        self.call_method(&server_configuration(), &MethodId::ServerConfiguration_CancelChanges.into(), vec![]).await?;
        Ok(())
    }

    /// GetRejectedList: the certificates the server refused (DER).
    pub async fn get_rejected_list(&self) -> Result<Vec<Vec<u8>>> {
        let out = self
            .call_method(&server_configuration(), &MethodId::ServerConfiguration_GetRejectedList.into(), vec![])
            .await?;
        byte_strings(out.first()).ok_or_else(|| unexpected("GetRejectedList"))
    }

    async fn trust_list_call(&self, method: MethodId, args: Vec<Variant>) -> Result<Vec<Variant>> {
        self.call_method(&trust_list(), &method.into(), args).await
    }

    /// Reads the lists `masks` selects (all with `None`): OpenWithMasks, Read until the end, Close.
    pub async fn read_trust_list(&self, masks: Option<TrustListMasks>) -> Result<TrustListDataType> {
        let masks = masks.unwrap_or(TrustListMasks::ALL);
        let out = self
            .trust_list_call(
                MethodId::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_OpenWithMasks,
                vec![Variant::UInt32(masks.0)],
            )
            .await?;
        let Some(Variant::UInt32(handle)) = out.first().cloned() else { return Err(unexpected("OpenWithMasks")) };
        let mut content = Vec::new();
        let read = loop {
            let out = self
                .trust_list_call(
                    MethodId::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_Read,
                    vec![Variant::UInt32(handle), Variant::Int32(i32::try_from(CHUNK).unwrap_or(i32::MAX))],
                )
                .await;
            match out {
                Ok(out) => match out.first() {
                    Some(Variant::ByteString(b)) if b.value.as_ref().is_some_and(|v| !v.is_empty()) => {
                        content.extend_from_slice(b.value.as_deref().unwrap_or_default());
                    }
                    _ => break Ok(()),
                },
                Err(e) => break Err(e),
            }
        };
        let closed = self
            .trust_list_call(
                MethodId::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_Close,
                vec![Variant::UInt32(handle)],
            )
            .await;
        read?;
        closed?;
        decode_trust_list(&content).map_err(|status| Error::Remote { status, reason: "TrustList content".into() })
    }

    /// Replaces the lists `list.specified_lists` names: Open (write, erase), Write, CloseAndUpdate. Returns
    /// applyChangesRequired.
    pub async fn write_trust_list(&self, list: &TrustListDataType) -> Result<bool> {
        let content =
            encode_trust_list(list).map_err(|status| Error::Remote { status, reason: "TrustList encoding".into() })?;
        let out = self
            .trust_list_call(
                MethodId::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_Open,
                vec![Variant::Byte(2 | 4)],
            )
            .await?;
        let Some(Variant::UInt32(handle)) = out.first().cloned() else { return Err(unexpected("Open")) };
        for chunk in content.chunks(CHUNK) {
            let written = self
                .trust_list_call(
                    MethodId::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_Write,
                    vec![Variant::UInt32(handle), Variant::ByteString(ByteString::from(chunk.to_vec()))],
                )
                .await;
            if let Err(e) = written {
                // Release the lock the write handle holds; the write error is what the caller needs to see.
                let _ = self
                    .trust_list_call(
                        MethodId::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_Close,
                        vec![Variant::UInt32(handle)],
                    )
                    .await;
                return Err(e);
            }
        }
        let out = self
            .trust_list_call(
                MethodId::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_CloseAndUpdate,
                vec![Variant::UInt32(handle)],
            )
            .await?;
        match out.first() {
            Some(Variant::Boolean(b)) => Ok(*b),
            _ => Err(unexpected("CloseAndUpdate")),
        }
    }

    /// AddCertificate: to the trusted list (`trusted`) or the issuer list.
    pub async fn add_certificate(&self, certificate: &[u8], trusted: bool) -> Result<()> {
        self.trust_list_call(
            MethodId::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_AddCertificate,
            vec![Variant::ByteString(ByteString::from(certificate.to_vec())), Variant::Boolean(trusted)],
        )
        .await?;
        Ok(())
    }

    /// RemoveCertificate by SHA-1 thumbprint (hex) from the trusted list (`trusted`) or the issuer list.
    pub async fn remove_certificate(&self, thumbprint_hex: &str, trusted: bool) -> Result<()> {
        self.trust_list_call(
            MethodId::ServerConfiguration_CertificateGroups_DefaultApplicationGroup_TrustList_RemoveCertificate,
            vec![Variant::String(UAString::from(thumbprint_hex)), Variant::Boolean(trusted)],
        )
        .await?;
        Ok(())
    }
}
