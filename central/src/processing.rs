//! Processing a verified device request: entitlement, device key, replay, counter, the device's open orders, one
//! issuer call per item, and everything recorded in ONE transaction, so a failed step changes nothing. Receipts
//! mark orders fulfilled; a replaced dongle gets the centrally made keys of its predecessor re-sealed to it.
//!
//! The request, update and receipt file formats (signatures, envelopes) live in the vault crate's `provision`
//! module; they turn files into the types here and back.

use std::collections::BTreeSet;
use std::sync::Arc;

use certvault::provision::{OaepHash, Recipient};
use certvault::{KeyAlgorithm, PublicKey};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::db::{now, Tx};
use crate::error::{CentralError, Result};
use crate::issuer::{self, IssueRequest, IssuerRef, Subject};
use crate::registry::{self, Entitlement, KeyOriginKind, OrderItem};
use crate::service::Central;

/// Where a requested key comes from and what the device sends for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyOrigin {
    /// The device made the key inside its vault; a CSR signed by it proves possession.
    Device {
        /// PKCS#10 CSR, DER.
        #[serde(with = "serde_bytes_b64")]
        csr_der: Vec<u8>,
    },
    /// The device made the key and its own self-signed certificate (the `self-signed` issuer records it).
    DeviceSelfSigned {
        /// The certificate, DER.
        #[serde(with = "serde_bytes_b64")]
        certificate_der: Vec<u8>,
    },
    /// The central makes the key (through its [`crate::keymaker::KeyMaker`]) and seals it to the dongle.
    Central,
}

/// One item of a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestItem {
    /// The key's label in the device's vault; matches the order item's label.
    pub label: String,
    /// Key algorithm.
    pub key_algorithm: KeyAlgorithm,
    /// The ApplicationUri the device expects (empty: whatever the order says).
    #[serde(default)]
    pub application_uri: String,
    /// Host names the device expects (informational; the order decides).
    #[serde(default)]
    pub host_names: Vec<String>,
    /// Where the key comes from.
    pub origin: KeyOrigin,
}

/// A device request whose signature the envelope layer has verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedRequest {
    /// Dongle serial.
    pub serial: String,
    /// The device identity public key (SPKI DER) that signed the request.
    #[serde(with = "serde_bytes_b64")]
    pub device_public_key: Vec<u8>,
    /// The dongle's transport public key (SPKI DER): centrally made keys are sealed to it.
    #[serde(with = "serde_bytes_b64")]
    pub transport_public_key: Vec<u8>,
    /// The OAEP hash the transport key unwraps with (the request's `transport_oaep`: SHA-1 for tokens such as
    /// SoftHSM2 2.6 whose `C_UnwrapKey` knows no other).
    #[serde(default)]
    pub transport_oaep: OaepHash,
    /// A fresh nonce; the update is bound to it.
    #[serde(with = "serde_nonce")]
    pub nonce: [u8; 32],
    /// The dongle's update counter.
    pub counter: u64,
    /// The requested certificates.
    pub items: Vec<RequestItem>,
}

/// One certificate (and key) going back to the device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedItem {
    /// The key's label.
    pub label: String,
    /// The chain, leaf first, DER.
    #[serde(with = "serde_chain_b64")]
    pub chain: Vec<Vec<u8>>,
    /// For centrally made keys: the key sealed to the dongle's transport key.
    #[serde(default, with = "serde_opt_b64")]
    pub sealed_key: Option<Vec<u8>>,
}

/// The result of a processed request: what the update carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    /// Dongle serial.
    pub serial: String,
    /// The request's nonce.
    #[serde(with = "serde_nonce")]
    pub nonce: [u8; 32],
    /// The counter the dongle has after applying the update (request counter + 1).
    pub new_counter: u64,
    /// The items.
    pub items: Vec<IssuedItem>,
}

/// A device's receipt for an applied update, after the envelope layer verified its signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedReceipt {
    /// Dongle serial.
    pub serial: String,
    /// The device identity public key that signed the receipt.
    #[serde(with = "serde_bytes_b64")]
    pub device_public_key: Vec<u8>,
    /// The nonce of the request the applied update answered.
    #[serde(with = "serde_nonce")]
    pub nonce: [u8; 32],
    /// The dongle's counter after applying.
    pub counter: u64,
    /// What the dongle stored: every certificate the confirmed update issued for an order must be listed.
    #[serde(default)]
    pub certificates: Vec<ReceiptCertificate>,
}

/// A certificate a dongle confirms it stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptCertificate {
    /// The key's label.
    pub label: String,
    /// SHA-256 of the leaf certificate's DER, lower-case hex.
    pub sha256: String,
}

/// What a receipt changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptOutcome {
    /// Dongle serial.
    pub serial: String,
    /// The orders now fulfilled.
    pub fulfilled_orders: Vec<i64>,
}

struct DeviceRow {
    id: i64,
    device_key: Option<Vec<u8>>,
    transport_key: Option<Vec<u8>>,
    entitled: bool,
    counter: u64,
}

async fn device_row(tx: &mut Tx, serial: &str) -> Result<DeviceRow> {
    let row = sqlx::query(
        "SELECT id, device_public_key, transport_public_key, entitled, last_counter FROM devices WHERE serial = $1",
    )
    .bind(serial)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| CentralError::UnknownDevice(serial.into()))?;
    Ok(DeviceRow {
        id: row.try_get("id")?,
        device_key: row.try_get("device_public_key")?,
        transport_key: row.try_get("transport_public_key")?,
        entitled: row.try_get::<i64, _>("entitled")? != 0,
        counter: u64::try_from(row.try_get::<i64, _>("last_counter")?).unwrap_or(0),
    })
}

fn to_i64(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| CentralError::Invalid(format!("{what} out of range")))
}

/// Splits concatenated DER certificates.
fn split_chain(mut bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (rest, _) = x509_parser::parse_x509_certificate(bytes)
            .map_err(|e| CentralError::Invalid(format!("stored chain: {e}")))?;
        let used = bytes.len() - rest.len();
        out.push(bytes[..used].to_vec());
        bytes = rest;
    }
    Ok(out)
}

impl VerifiedRequest {
    /// Whom central-made keys are sealed to: the transport key with its OAEP hash.
    pub fn transport_recipient(&self) -> Recipient {
        Recipient { spki: self.transport_public_key.clone(), oaep: self.transport_oaep }
    }
}

impl Central {
    /// Processes a verified request: checks entitlement, keys, replay and counter, issues every requested item of
    /// the device's open orders with its issuer, re-seals keys restored from a replaced dongle, and records it
    /// all (certificates, key backups, order states, nonce, counter) in one transaction.
    pub async fn process(&self, request: &VerifiedRequest) -> Result<Issued> {
        let (tx, issued) = self.process_uncommitted(request).await?;
        tx.commit().await?;
        Ok(issued)
    }

    /// [`Central::process`] without the commit: the caller commits once the update is signed, so that a failure
    /// to sign changes nothing either.
    pub(crate) async fn process_uncommitted(&self, request: &VerifiedRequest) -> Result<(Tx, Issued)> {
        let serial = request.serial.as_str();
        PublicKey::from_spki(&request.device_public_key)
            .map_err(|e| CentralError::Invalid(format!("device public key: {e}")))?;
        let mut tx = self.db().begin().await?;
        let device = device_row(&mut tx, serial).await?;
        if !device.entitled {
            return Err(CentralError::NotEntitled(serial.into()));
        }
        match &device.device_key {
            Some(k) if *k != request.device_public_key => {
                return Err(CentralError::KeyMismatch { serial: serial.into(), which: "device" })
            }
            _ => {}
        }
        match &device.transport_key {
            Some(k) if *k != request.transport_public_key => {
                return Err(CentralError::KeyMismatch { serial: serial.into(), which: "transport" })
            }
            _ => {}
        }
        let seen = sqlx::query("SELECT device_id FROM request_nonces WHERE nonce = $1")
            .bind(request.nonce.to_vec())
            .fetch_optional(&mut *tx)
            .await?;
        if seen.is_some() {
            return Err(CentralError::Replay(hex::encode(request.nonce)));
        }
        if request.counter != device.counter {
            return Err(CentralError::WrongCounter {
                serial: serial.into(),
                got: request.counter,
                expected: device.counter,
            });
        }
        // Claim the counter first: a concurrent request of the same dongle (PostgreSQL) waits for this row and then
        // finds the counter moved on.
        let new_counter =
            request.counter.checked_add(1).ok_or_else(|| CentralError::Invalid("counter overflow".into()))?;
        let claimed = sqlx::query("UPDATE devices SET last_counter = $1 WHERE id = $2 AND last_counter = $3")
            .bind(to_i64(new_counter, "counter")?)
            .bind(device.id)
            .bind(to_i64(request.counter, "counter")?)
            .execute(&mut *tx)
            .await?;
        if claimed.rows_affected() != 1 {
            return Err(CentralError::WrongCounter {
                serial: serial.into(),
                got: request.counter,
                expected: request.counter.saturating_add(1),
            });
        }
        let open = sqlx::query(&format!(
            "SELECT {}, i.order_id FROM order_items i JOIN orders o ON o.id = i.order_id \
             WHERE o.device_id = $1 AND i.status = 'open' ORDER BY i.id",
            registry::ITEM_COLUMNS
        ))
        .bind(device.id)
        .fetch_all(&mut *tx)
        .await?;
        let mut open_items: Vec<(OrderItem, i64)> = Vec::with_capacity(open.len());
        for r in &open {
            open_items.push((registry::order_item_from_row(r)?, r.try_get("order_id")?));
        }

        let mut issued = Vec::new();
        let mut touched_orders = BTreeSet::new();
        for (n, item) in request.items.iter().enumerate() {
            if request.items[..n].iter().any(|o| o.label == item.label) {
                return Err(CentralError::Invalid(format!("label {:?} appears twice in the request", item.label)));
            }
            let (order_item, order_id) =
                open_items.iter().find(|(o, _)| o.item.label == item.label).ok_or_else(|| {
                    CentralError::NotOrdered {
                        serial: serial.into(),
                        message: format!("no open order for a key labelled {:?}", item.label),
                    }
                })?;
            let out = self.issue_item(&mut tx, request, device.id, order_item, item).await?;
            let done = sqlx::query("UPDATE order_items SET status = 'issued' WHERE id = $1 AND status = 'open'")
                .bind(order_item.id)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() != 1 {
                return Err(CentralError::Conflict(format!("order item {:?} was issued meanwhile", item.label)));
            }
            touched_orders.insert(*order_id);
            issued.push(out);
        }
        issued.extend(self.restore_in(&mut tx, device.id, &request.transport_recipient()).await?);

        let ts = now();
        for order_id in touched_orders {
            let left = sqlx::query("SELECT COUNT(*) AS n FROM order_items WHERE order_id = $1 AND status = 'open'")
                .bind(order_id)
                .fetch_one(&mut *tx)
                .await?;
            if left.try_get::<i64, _>("n")? == 0 {
                sqlx::query("UPDATE orders SET status = 'issued', issued_nonce = $1, issued_at = $2 WHERE id = $3")
                    .bind(request.nonce.to_vec())
                    .bind(ts)
                    .bind(order_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        sqlx::query("INSERT INTO request_nonces (nonce, device_id, seen_at) VALUES ($1, $2, $3)")
            .bind(request.nonce.to_vec())
            .bind(device.id)
            .bind(ts)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE devices SET last_seen = $1, device_public_key = $2, transport_public_key = $3 WHERE id = $4",
        )
        .bind(ts)
        .bind(request.device_public_key.clone())
        .bind(request.transport_public_key.clone())
        .bind(device.id)
        .execute(&mut *tx)
        .await?;
        tracing::info!(serial, items = issued.len(), new_counter, "request processed");
        Ok((tx, Issued { serial: serial.into(), nonce: request.nonce, new_counter, items: issued }))
    }

    async fn issue_item(
        &self,
        tx: &mut Tx,
        request: &VerifiedRequest,
        device_id: i64,
        order_item: &OrderItem,
        item: &RequestItem,
    ) -> Result<IssuedItem> {
        let serial = request.serial.as_str();
        let ordered = &order_item.item;
        let not_ordered = |message: String| CentralError::NotOrdered { serial: serial.into(), message };
        let algorithm: KeyAlgorithm = ordered.key_algorithm.parse()?;
        if item.key_algorithm != algorithm {
            return Err(not_ordered(format!(
                "{}: {} was requested but {} was ordered",
                item.label, item.key_algorithm, algorithm
            )));
        }
        if !item.application_uri.is_empty() && item.application_uri != ordered.application_uri {
            return Err(not_ordered(format!(
                "{}: ApplicationUri {} was requested but {} was ordered",
                item.label, item.application_uri, ordered.application_uri
            )));
        }
        let reference = IssuerRef::parse(&ordered.issuer)?;
        let origin_ok = matches!(
            (&item.origin, ordered.key_origin, &reference),
            (KeyOrigin::Device { .. }, KeyOriginKind::Device, IssuerRef::Ca(_) | IssuerRef::External(_))
                | (KeyOrigin::DeviceSelfSigned { .. }, KeyOriginKind::Device, IssuerRef::SelfSigned)
                | (KeyOrigin::Central, KeyOriginKind::Central, _)
        );
        if !origin_ok {
            return Err(not_ordered(format!(
                "{}: the request's key origin does not fit the order (key made on the {:?}, issuer {})",
                item.label, ordered.key_origin, reference
            )));
        }
        let issuer = self.issuer_in(tx, &reference).await?;
        let mut made = None;
        let spki = match &item.origin {
            KeyOrigin::Device { csr_der } => issuer::csr_spki(csr_der)?,
            KeyOrigin::DeviceSelfSigned { certificate_der } => issuer::cert_facts(certificate_der)?.spki,
            KeyOrigin::Central => {
                let maker = self.key_maker.clone().ok_or_else(|| {
                    CentralError::Unavailable(
                        "central key generation is not configured: set [key_maker] in central.toml".into(),
                    )
                })?;
                let backup = self.backup_spki.clone().ok_or_else(|| {
                    CentralError::Config(
                        "no backup key is configured: set [key_maker] backup_key in central.toml".into(),
                    )
                })?;
                let transport = request.transport_recipient();
                let backup = Recipient::new(backup);
                let key = tokio::task::spawn_blocking(move || maker.make_sealed(algorithm, &transport, &backup))
                    .await
                    .map_err(|e| CentralError::KeyMaker(format!("{e}")))??;
                let spki = key.spki.clone();
                made = Some(key);
                spki
            }
        };
        let got_alg = PublicKey::from_spki(&spki)?.algorithm();
        if got_alg != algorithm {
            return Err(not_ordered(format!("{}: the key is {got_alg}, the order says {algorithm}", item.label)));
        }
        let subject_bytes = match &item.origin {
            KeyOrigin::Device { csr_der } => csr_der.clone(),
            KeyOrigin::DeviceSelfSigned { certificate_der } => certificate_der.clone(),
            KeyOrigin::Central => spki.clone(),
        };
        let origin = item.origin.clone();
        let (cn, uri, hosts, days) = (
            format!("{} {}", serial, ordered.label),
            ordered.application_uri.clone(),
            ordered.host_names.clone(),
            ordered.validity_days,
        );
        let issuer2 = Arc::clone(&issuer);
        let chain = tokio::task::spawn_blocking(move || {
            let subject = match origin {
                KeyOrigin::Device { .. } => Subject::Csr(&subject_bytes),
                KeyOrigin::DeviceSelfSigned { .. } => Subject::Certificate(&subject_bytes),
                KeyOrigin::Central => Subject::PublicKey(&subject_bytes),
            };
            issuer2.issue(&IssueRequest {
                subject,
                common_name: &cn,
                application_uri: &uri,
                host_names: &hosts,
                validity_days: days,
            })
        })
        .await
        .map_err(|e| CentralError::issuer(reference.to_string(), format!("{e}")))??;
        let facts = issuer::check_chain(&reference, &chain, &spki, &ordered.application_uri)?;
        let ca_id: Option<i64> = match &reference {
            IssuerRef::Ca(name) => Some(
                sqlx::query("SELECT id FROM cas WHERE name = $1")
                    .bind(name)
                    .fetch_one(&mut **tx)
                    .await?
                    .try_get("id")?,
            ),
            _ => None,
        };
        let rest: Vec<u8> = chain[1..].concat();
        let row = sqlx::query(
            "INSERT INTO certificates (serial_number, device_id, order_item_id, issuer, ca_id, subject, not_before, \
             not_after, der, chain, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
        )
        .bind(&facts.serial_number)
        .bind(device_id)
        .bind(order_item.id)
        .bind(reference.to_string())
        .bind(ca_id)
        .bind(&facts.subject)
        .bind(facts.not_before)
        .bind(facts.not_after)
        .bind(chain[0].clone())
        .bind(rest)
        .bind(now())
        .fetch_one(&mut **tx)
        .await?;
        let cert_id: i64 = row.try_get("id")?;
        let sealed_key = match made {
            Some(made) => {
                sqlx::query(
                    "INSERT INTO key_backups (device_id, certificate_id, label, key_algorithm, spki, sealed_backup, \
                     pending_restore, created_at) VALUES ($1, $2, $3, $4, $5, $6, 0, $7)",
                )
                .bind(device_id)
                .bind(cert_id)
                .bind(&ordered.label)
                .bind(algorithm.to_string())
                .bind(made.spki.clone())
                .bind(made.sealed_backup.clone())
                .bind(now())
                .execute(&mut **tx)
                .await?;
                Some(made.sealed_for_device)
            }
            None => None,
        };
        Ok(IssuedItem { label: ordered.label.clone(), chain, sealed_key })
    }

    /// Re-seals every backed-up key waiting for this (replacement) dongle to its transport key.
    async fn restore_in(&self, tx: &mut Tx, device_id: i64, transport: &Recipient) -> Result<Vec<IssuedItem>> {
        let rows = sqlx::query(
            "SELECT b.id, b.label, b.sealed_backup, c.der, c.chain FROM key_backups b \
             JOIN certificates c ON c.id = b.certificate_id \
             WHERE b.device_id = $1 AND b.pending_restore = 1 AND c.revoked_at IS NULL ORDER BY b.id",
        )
        .bind(device_id)
        .fetch_all(&mut **tx)
        .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let maker = self.key_maker.clone().ok_or_else(|| {
            CentralError::Unavailable("restoring keys needs the key maker: set [key_maker] in central.toml".into())
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: i64 = r.try_get("id")?;
            let sealed: Vec<u8> = r.try_get("sealed_backup")?;
            let transport = transport.clone();
            let m = Arc::clone(&maker);
            let sealed_key = tokio::task::spawn_blocking(move || m.reseal(&sealed, &transport))
                .await
                .map_err(|e| CentralError::KeyMaker(format!("{e}")))??;
            let mut chain = vec![r.try_get::<Vec<u8>, _>("der")?];
            chain.extend(split_chain(&r.try_get::<Vec<u8>, _>("chain")?)?);
            sqlx::query("UPDATE key_backups SET pending_restore = 0 WHERE id = $1").bind(id).execute(&mut **tx).await?;
            out.push(IssuedItem { label: r.try_get("label")?, chain, sealed_key: Some(sealed_key) });
        }
        Ok(out)
    }

    /// Records a verified receipt: the orders the acknowledged update carried become `fulfilled`.
    pub async fn receipt(&self, receipt: &VerifiedReceipt) -> Result<ReceiptOutcome> {
        let serial = receipt.serial.as_str();
        let mut tx = self.db().begin().await?;
        let device = device_row(&mut tx, serial).await?;
        if device.device_key.as_deref() != Some(receipt.device_public_key.as_slice()) {
            return Err(CentralError::KeyMismatch { serial: serial.into(), which: "device" });
        }
        let nonce = receipt.nonce.to_vec();
        let seen = sqlx::query("SELECT device_id FROM request_nonces WHERE nonce = $1")
            .bind(nonce.clone())
            .fetch_optional(&mut *tx)
            .await?;
        match seen {
            Some(r) if r.try_get::<i64, _>("device_id")? == device.id => {}
            _ => {
                return Err(CentralError::NotFound(format!(
                    "no update for request nonce {} was sent to device {serial}",
                    hex::encode(receipt.nonce)
                )))
            }
        }
        if sqlx::query("SELECT id FROM receipts WHERE device_id = $1 AND nonce = $2")
            .bind(device.id)
            .bind(nonce.clone())
            .fetch_optional(&mut *tx)
            .await?
            .is_some()
        {
            return Err(CentralError::Conflict(format!("device {serial} confirmed that update already")));
        }
        if receipt.counter != device.counter {
            return Err(CentralError::WrongCounter {
                serial: serial.into(),
                got: receipt.counter,
                expected: device.counter,
            });
        }
        // The receipt must confirm the very certificates the update carried for the orders it answers: a dongle
        // that stored something else (or nothing) does not fulfil them.
        let issued = sqlx::query(
            "SELECT i.label, c.der FROM certificates c JOIN order_items i ON i.id = c.order_item_id \
             JOIN orders o ON o.id = i.order_id WHERE o.device_id = $1 AND o.issued_nonce = $2 ORDER BY c.id",
        )
        .bind(device.id)
        .bind(nonce.clone())
        .fetch_all(&mut *tx)
        .await?;
        for r in &issued {
            let label: String = r.try_get("label")?;
            let sha256 = certvault::provision::thumbprint(&r.try_get::<Vec<u8>, _>("der")?);
            if !receipt.certificates.iter().any(|c| c.label == label && c.sha256.eq_ignore_ascii_case(&sha256)) {
                return Err(CentralError::Invalid(format!(
                    "device {serial}: the receipt does not confirm the certificate {label:?} (sha256 {sha256}) \
                     the update carried; nothing recorded"
                )));
            }
        }
        let ts = now();
        let rows =
            sqlx::query("SELECT id FROM orders WHERE device_id = $1 AND issued_nonce = $2 AND status = 'issued'")
                .bind(device.id)
                .bind(nonce.clone())
                .fetch_all(&mut *tx)
                .await?;
        let mut fulfilled = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: i64 = r.try_get("id")?;
            sqlx::query("UPDATE orders SET status = 'fulfilled', fulfilled_at = $1 WHERE id = $2")
                .bind(ts)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            fulfilled.push(id);
        }
        sqlx::query("INSERT INTO receipts (device_id, nonce, counter, received_at) VALUES ($1, $2, $3, $4)")
            .bind(device.id)
            .bind(nonce)
            .bind(to_i64(receipt.counter, "counter")?)
            .bind(ts)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ReceiptOutcome { serial: serial.into(), fulfilled_orders: fulfilled })
    }

    /// Replaces dongle `old_serial` by `new`: the new dongle is entitled with the same device type, the old one
    /// loses its entitlement, and the centrally made keys backed up for the old one are re-sealed to the new
    /// dongle's transport key when it sends its first request.
    pub async fn replace_dongle(&self, old_serial: &str, new: &Entitlement) -> Result<registry::Device> {
        let mut tx = self.db().begin().await?;
        let old = device_row(&mut tx, old_serial).await?;
        if sqlx::query("SELECT id FROM devices WHERE serial = $1")
            .bind(&new.serial)
            .fetch_optional(&mut *tx)
            .await?
            .is_some()
        {
            return Err(CentralError::Conflict(format!("device {} is registered already", new.serial)));
        }
        let decode = |v: &Option<String>, what: &str| -> Result<Option<Vec<u8>>> {
            use base64::Engine as _;
            v.as_deref()
                .map(|s| {
                    let der = base64::engine::general_purpose::STANDARD
                        .decode(s.trim())
                        .map_err(|e| CentralError::Invalid(format!("{what}: {e}")))?;
                    PublicKey::from_spki(&der).map_err(|e| CentralError::Invalid(format!("{what}: {e}")))?;
                    Ok(der)
                })
                .transpose()
        };
        let row = sqlx::query(
            "INSERT INTO devices (serial, device_type_id, device_public_key, transport_public_key, entitled, \
             last_counter, created_at) SELECT $1, device_type_id, $2, $3, 1, 0, $4 FROM devices WHERE id = $5 RETURNING id",
        )
        .bind(&new.serial)
        .bind(decode(&new.device_public_key, "device_public_key")?)
        .bind(decode(&new.transport_public_key, "transport_public_key")?)
        .bind(now())
        .bind(old.id)
        .fetch_one(&mut *tx)
        .await?;
        let new_id: i64 = row.try_get("id")?;
        sqlx::query("UPDATE devices SET entitled = 0, replaced_by = $1 WHERE id = $2")
            .bind(&new.serial)
            .bind(old.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE key_backups SET device_id = $1, pending_restore = 1 WHERE device_id = $2")
            .bind(new_id)
            .bind(old.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        registry::device(self.db(), &new.serial).await
    }
}

mod serde_bytes_b64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s.as_bytes()).map_err(serde::de::Error::custom)
    }
}

mod serde_opt_b64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&STANDARD.encode(v)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| STANDARD.decode(s.as_bytes()).map_err(serde::de::Error::custom))
            .transpose()
    }
}

mod serde_chain_b64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|c| STANDARD.encode(c)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Vec::<String>::deserialize(d)?
            .into_iter()
            .map(|s| STANDARD.decode(s.as_bytes()).map_err(serde::de::Error::custom))
            .collect()
    }
}

mod serde_nonce {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let bytes = hex::decode(s).map_err(serde::de::Error::custom)?;
        bytes.try_into().map_err(|_| serde::de::Error::custom("a nonce is 32 bytes"))
    }
}
