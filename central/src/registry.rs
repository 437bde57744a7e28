//! The operator's records: device types, devices and their entitlement, orders, certificates. Every change runs in
//! one transaction; reads use the pool.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::db::{now, Db, Tx};
use crate::error::{CentralError, Result};

/// A kind of device (a machine model); devices and their orders belong to one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceType {
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// A device, known by the serial of its dongle (vault).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Dongle serial.
    pub serial: String,
    /// Device type name.
    pub device_type: String,
    /// The device identity public key (SPKI DER, base64), once known.
    pub device_public_key: Option<String>,
    /// The dongle's transport public key (SPKI DER, base64), once known: centrally made keys are sealed to it.
    pub transport_public_key: Option<String>,
    /// Whether requests from this dongle are served.
    pub entitled: bool,
    /// The update counter the next request must carry.
    pub last_counter: u64,
    /// Last accepted request (Unix seconds).
    pub last_seen: Option<i64>,
    /// The serial of the dongle that replaced this one.
    pub replaced_by: Option<String>,
}

/// Where an ordered key is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyOriginKind {
    /// Inside the device's vault; the request carries a CSR (or, for the self-signed issuer, a certificate).
    Device,
    /// By the central's key maker, inside a vault; the key travels sealed to the dongle's transport key.
    Central,
}

impl KeyOriginKind {
    fn as_str(self) -> &'static str {
        match self {
            KeyOriginKind::Device => "device",
            KeyOriginKind::Central => "central",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "device" => Ok(KeyOriginKind::Device),
            "central" => Ok(KeyOriginKind::Central),
            other => Err(CentralError::Invalid(format!("key origin {other:?} (use device or central)"))),
        }
    }
}

/// One certificate an order asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOrderItem {
    /// The key's label in the device's vault.
    pub label: String,
    /// `rsa2048`, `rsa3072`, `rsa4096`, `p256` or `p384`.
    pub key_algorithm: String,
    /// The OPC UA ApplicationUri (subjectAltName URI).
    pub application_uri: String,
    /// DNS names (subjectAltName).
    #[serde(default)]
    pub host_names: Vec<String>,
    /// Validity in days.
    pub validity_days: u32,
    /// `self-signed`, `ca:NAME` or `external:NAME`.
    pub issuer: String,
    /// Where the key is made.
    pub key_origin: KeyOriginKind,
}

impl NewOrderItem {
    /// Checks the fields that can be checked without the database.
    pub fn validate(&self) -> Result<()> {
        if self.label.trim().is_empty() {
            return Err(CentralError::Invalid("an order item needs a label".into()));
        }
        self.key_algorithm
            .parse::<certvault::KeyAlgorithm>()
            .map_err(|e| CentralError::Invalid(format!("item {}: {e}", self.label)))?;
        if self.application_uri.trim().is_empty() {
            return Err(CentralError::Invalid(format!("item {}: an ApplicationUri is required", self.label)));
        }
        if self.validity_days == 0 || self.validity_days > 36_500 {
            return Err(CentralError::Invalid(format!("item {}: validity must be 1..=36500 days", self.label)));
        }
        crate::issuer::IssuerRef::parse(&self.issuer)?;
        if self.issuer == "self-signed" && self.key_origin == KeyOriginKind::Central {
            return Err(CentralError::Invalid(format!(
                "item {}: a self-signed certificate is made on the device, so its key origin must be device",
                self.label
            )));
        }
        Ok(())
    }
}

/// An order item as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderItem {
    /// Row id.
    pub id: i64,
    /// What was ordered.
    #[serde(flatten)]
    pub item: NewOrderItem,
    /// `open` or `issued`.
    pub status: String,
}

/// An order: the certificates one device gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Row id.
    pub id: i64,
    /// Dongle serial.
    pub device: String,
    /// `open`, `issued` (the update went out) or `fulfilled` (the device confirmed it with a receipt).
    pub status: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub issued_at: Option<i64>,
    /// Unix seconds.
    pub fulfilled_at: Option<i64>,
    /// The items.
    pub items: Vec<OrderItem>,
}

/// A certificate the central issued or recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRecord {
    /// Row id.
    pub id: i64,
    /// Serial number, lower-case hex.
    pub serial_number: String,
    /// Dongle serial.
    pub device: String,
    /// The issuer reference (`self-signed`, `ca:NAME`, `external:NAME`).
    pub issuer: String,
    /// Subject DN.
    pub subject: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// Unix seconds, when revoked.
    pub revoked_at: Option<i64>,
    /// Revocation reason, when revoked.
    pub revocation_reason: Option<String>,
    /// The order item it answered.
    pub order_item_id: Option<i64>,
}

/// Registers a device type.
pub async fn add_device_type(db: &Db, name: &str, description: &str) -> Result<DeviceType> {
    if name.trim().is_empty() {
        return Err(CentralError::Invalid("a device type needs a name".into()));
    }
    let mut tx = db.begin().await?;
    if sqlx::query("SELECT id FROM device_types WHERE name = $1").bind(name).fetch_optional(&mut *tx).await?.is_some() {
        return Err(CentralError::Conflict(format!("device type {name:?} exists")));
    }
    let created_at = now();
    sqlx::query("INSERT INTO device_types (name, description, created_at) VALUES ($1, $2, $3)")
        .bind(name)
        .bind(description)
        .bind(created_at)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(DeviceType { name: name.into(), description: description.into(), created_at })
}

/// Every device type.
pub async fn device_types(db: &Db) -> Result<Vec<DeviceType>> {
    let rows = sqlx::query("SELECT name, description, created_at FROM device_types ORDER BY name")
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| {
            Ok(DeviceType {
                name: r.try_get("name")?,
                description: r.try_get("description")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
}

/// What the operator says when entitling a dongle.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entitlement {
    /// Dongle serial.
    pub serial: String,
    /// Device type name.
    pub device_type: String,
    /// Device identity public key (SPKI DER, base64). Without it, the first verified request pins it.
    #[serde(default)]
    pub device_public_key: Option<String>,
    /// Transport public key (SPKI DER, base64). Without it, the first verified request pins it.
    #[serde(default)]
    pub transport_public_key: Option<String>,
}

fn b64_der(field: &str, value: &Option<String>) -> Result<Option<Vec<u8>>> {
    value
        .as_deref()
        .map(|v| {
            let der = B64.decode(v.trim()).map_err(|e| CentralError::Invalid(format!("{field}: not base64: {e}")))?;
            certvault::PublicKey::from_spki(&der).map_err(|e| CentralError::Invalid(format!("{field}: {e}")))?;
            Ok(der)
        })
        .transpose()
}

/// Entitles a dongle: registers it (or re-entitles a known one, updating the keys given).
pub async fn entitle(db: &Db, e: &Entitlement) -> Result<Device> {
    if e.serial.trim().is_empty() {
        return Err(CentralError::Invalid("a device needs a dongle serial".into()));
    }
    let device_key = b64_der("device_public_key", &e.device_public_key)?;
    let transport_key = b64_der("transport_public_key", &e.transport_public_key)?;
    let mut tx = db.begin().await?;
    let type_id = device_type_id(&mut tx, &e.device_type).await?;
    let existing =
        sqlx::query("SELECT id FROM devices WHERE serial = $1").bind(&e.serial).fetch_optional(&mut *tx).await?;
    match existing {
        Some(row) => {
            let id: i64 = row.try_get("id")?;
            sqlx::query(
                "UPDATE devices SET entitled = 1, device_type_id = $1, \
                 device_public_key = COALESCE($2, device_public_key), \
                 transport_public_key = COALESCE($3, transport_public_key) WHERE id = $4",
            )
            .bind(type_id)
            .bind(device_key)
            .bind(transport_key)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        None => {
            sqlx::query(
                "INSERT INTO devices (serial, device_type_id, device_public_key, transport_public_key, entitled, \
                 last_counter, created_at) VALUES ($1, $2, $3, $4, 1, 0, $5)",
            )
            .bind(&e.serial)
            .bind(type_id)
            .bind(device_key)
            .bind(transport_key)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        }
    }
    let device = device_in(&mut tx, &e.serial).await?;
    tx.commit().await?;
    Ok(device)
}

/// Withdraws a dongle's entitlement: its requests are refused from now on.
pub async fn disentitle(db: &Db, serial: &str) -> Result<Device> {
    let mut tx = db.begin().await?;
    let n = sqlx::query("UPDATE devices SET entitled = 0 WHERE serial = $1").bind(serial).execute(&mut *tx).await?;
    if n.rows_affected() == 0 {
        return Err(CentralError::UnknownDevice(serial.into()));
    }
    let device = device_in(&mut tx, serial).await?;
    tx.commit().await?;
    Ok(device)
}

async fn device_type_id(tx: &mut Tx, name: &str) -> Result<i64> {
    let row = sqlx::query("SELECT id FROM device_types WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| CentralError::NotFound(format!("device type {name:?}")))?;
    Ok(row.try_get("id")?)
}

const DEVICE_COLUMNS: &str = "d.serial, t.name AS type_name, d.device_public_key, d.transport_public_key, d.entitled, \
                              d.last_counter, d.last_seen, d.replaced_by FROM devices d \
                              JOIN device_types t ON t.id = d.device_type_id";

fn device_from_row(r: &AnyRow) -> Result<Device> {
    let key =
        |col: &str| -> Result<Option<String>> { Ok(r.try_get::<Option<Vec<u8>>, _>(col)?.map(|k| B64.encode(k))) };
    Ok(Device {
        serial: r.try_get("serial")?,
        device_type: r.try_get("type_name")?,
        device_public_key: key("device_public_key")?,
        transport_public_key: key("transport_public_key")?,
        entitled: r.try_get::<i64, _>("entitled")? != 0,
        last_counter: u64::try_from(r.try_get::<i64, _>("last_counter")?).unwrap_or(0),
        last_seen: r.try_get("last_seen")?,
        replaced_by: r.try_get("replaced_by")?,
    })
}

async fn device_in(tx: &mut Tx, serial: &str) -> Result<Device> {
    let row = sqlx::query(&format!("SELECT {DEVICE_COLUMNS} WHERE d.serial = $1"))
        .bind(serial)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| CentralError::UnknownDevice(serial.into()))?;
    device_from_row(&row)
}

/// One device.
pub async fn device(db: &Db, serial: &str) -> Result<Device> {
    let row = sqlx::query(&format!("SELECT {DEVICE_COLUMNS} WHERE d.serial = $1"))
        .bind(serial)
        .fetch_optional(db.pool())
        .await?
        .ok_or_else(|| CentralError::UnknownDevice(serial.into()))?;
    device_from_row(&row)
}

/// Every device.
pub async fn devices(db: &Db) -> Result<Vec<Device>> {
    let rows = sqlx::query(&format!("SELECT {DEVICE_COLUMNS} ORDER BY d.serial")).fetch_all(db.pool()).await?;
    rows.iter().map(device_from_row).collect()
}

/// Devices that were sent an update (an order is `issued`) but never sent the receipt for it.
pub async fn unconfirmed(db: &Db) -> Result<Vec<Device>> {
    let rows = sqlx::query(&format!(
        "SELECT {DEVICE_COLUMNS} WHERE EXISTS (SELECT 1 FROM orders o WHERE o.device_id = d.id AND o.status = 'issued') \
         ORDER BY d.serial"
    ))
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(device_from_row).collect()
}

/// Creates an order of `items` for the device `serial`.
pub async fn create_order(db: &Db, serial: &str, items: &[NewOrderItem]) -> Result<Order> {
    if items.is_empty() {
        return Err(CentralError::Invalid("an order needs at least one item".into()));
    }
    for (i, item) in items.iter().enumerate() {
        item.validate()?;
        if items[..i].iter().any(|o| o.label == item.label) {
            return Err(CentralError::Invalid(format!("label {:?} appears twice in the order", item.label)));
        }
    }
    let mut tx = db.begin().await?;
    let device_id = device_id_in(&mut tx, serial).await?;
    for item in items {
        let clash = sqlx::query(
            "SELECT i.id FROM order_items i JOIN orders o ON o.id = i.order_id \
             WHERE o.device_id = $1 AND i.label = $2 AND i.status = 'open'",
        )
        .bind(device_id)
        .bind(&item.label)
        .fetch_optional(&mut *tx)
        .await?;
        if clash.is_some() {
            return Err(CentralError::Conflict(format!(
                "device {serial} has an open order for label {:?} already",
                item.label
            )));
        }
        if let crate::issuer::IssuerRef::Ca(name) = crate::issuer::IssuerRef::parse(&item.issuer)? {
            if sqlx::query("SELECT id FROM cas WHERE name = $1").bind(&name).fetch_optional(&mut *tx).await?.is_none() {
                return Err(CentralError::NotFound(format!("CA {name:?}")));
            }
        }
    }
    let row = sqlx::query("INSERT INTO orders (device_id, status, created_at) VALUES ($1, 'open', $2) RETURNING id")
        .bind(device_id)
        .bind(now())
        .fetch_one(&mut *tx)
        .await?;
    let order_id: i64 = row.try_get("id")?;
    for item in items {
        let hosts = serde_json::to_string(&item.host_names).map_err(|e| CentralError::Invalid(e.to_string()))?;
        sqlx::query(
            "INSERT INTO order_items (order_id, label, key_algorithm, application_uri, host_names, validity_days, \
             issuer, key_origin, status) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'open')",
        )
        .bind(order_id)
        .bind(&item.label)
        .bind(&item.key_algorithm)
        .bind(&item.application_uri)
        .bind(hosts)
        .bind(i64::from(item.validity_days))
        .bind(&item.issuer)
        .bind(item.key_origin.as_str())
        .execute(&mut *tx)
        .await?;
    }
    let order = order_in(&mut tx, order_id).await?;
    tx.commit().await?;
    Ok(order)
}

pub(crate) async fn device_id_in(tx: &mut Tx, serial: &str) -> Result<i64> {
    let row = sqlx::query("SELECT id FROM devices WHERE serial = $1")
        .bind(serial)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| CentralError::UnknownDevice(serial.into()))?;
    Ok(row.try_get("id")?)
}

pub(crate) fn order_item_from_row(r: &AnyRow) -> Result<OrderItem> {
    let hosts: String = r.try_get("host_names")?;
    let origin: String = r.try_get("key_origin")?;
    let days: i64 = r.try_get("validity_days")?;
    Ok(OrderItem {
        id: r.try_get("id")?,
        item: NewOrderItem {
            label: r.try_get("label")?,
            key_algorithm: r.try_get("key_algorithm")?,
            application_uri: r.try_get("application_uri")?,
            host_names: serde_json::from_str(&hosts)
                .map_err(|e| CentralError::Invalid(format!("stored host names: {e}")))?,
            validity_days: u32::try_from(days).map_err(|_| CentralError::Invalid("stored validity".into()))?,
            issuer: r.try_get("issuer")?,
            key_origin: KeyOriginKind::parse(&origin)?,
        },
        status: r.try_get("status")?,
    })
}

pub(crate) const ITEM_COLUMNS: &str =
    "i.id, i.label, i.key_algorithm, i.application_uri, i.host_names, i.validity_days, i.issuer, i.key_origin, i.status";

async fn order_from_row<'c, E>(exec: E, r: &AnyRow) -> Result<Order>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let id: i64 = r.try_get("id")?;
    let items = sqlx::query(&format!("SELECT {ITEM_COLUMNS} FROM order_items i WHERE i.order_id = $1 ORDER BY i.id"))
        .bind(id)
        .fetch_all(exec)
        .await?;
    Ok(Order {
        id,
        device: r.try_get("serial")?,
        status: r.try_get("status")?,
        created_at: r.try_get("created_at")?,
        issued_at: r.try_get("issued_at")?,
        fulfilled_at: r.try_get("fulfilled_at")?,
        items: items.iter().map(order_item_from_row).collect::<Result<_>>()?,
    })
}

const ORDER_COLUMNS: &str =
    "o.id, d.serial, o.status, o.created_at, o.issued_at, o.fulfilled_at FROM orders o JOIN devices d ON d.id = o.device_id";

async fn order_in(tx: &mut Tx, id: i64) -> Result<Order> {
    let row = sqlx::query(&format!("SELECT {ORDER_COLUMNS} WHERE o.id = $1")).bind(id).fetch_one(&mut **tx).await?;
    order_from_row(&mut **tx, &row).await
}

/// Orders, of one device or of all.
pub async fn orders(db: &Db, device: Option<&str>) -> Result<Vec<Order>> {
    let rows = match device {
        Some(serial) => {
            sqlx::query(&format!("SELECT {ORDER_COLUMNS} WHERE d.serial = $1 ORDER BY o.id"))
                .bind(serial)
                .fetch_all(db.pool())
                .await?
        }
        None => sqlx::query(&format!("SELECT {ORDER_COLUMNS} ORDER BY o.id")).fetch_all(db.pool()).await?,
    };
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(order_from_row(db.pool(), r).await?);
    }
    Ok(out)
}

const CERT_COLUMNS: &str = "c.id, c.serial_number, d.serial, c.issuer, c.subject, c.not_before, c.not_after, \
                            c.revoked_at, c.revocation_reason, c.order_item_id FROM certificates c \
                            JOIN devices d ON d.id = c.device_id";

fn cert_from_row(r: &AnyRow) -> Result<CertificateRecord> {
    Ok(CertificateRecord {
        id: r.try_get("id")?,
        serial_number: r.try_get("serial_number")?,
        device: r.try_get("serial")?,
        issuer: r.try_get("issuer")?,
        subject: r.try_get("subject")?,
        not_before: r.try_get("not_before")?,
        not_after: r.try_get("not_after")?,
        revoked_at: r.try_get("revoked_at")?,
        revocation_reason: r.try_get("revocation_reason")?,
        order_item_id: r.try_get("order_item_id")?,
    })
}

/// Certificates, of one device or of all.
pub async fn certificates(db: &Db, device: Option<&str>) -> Result<Vec<CertificateRecord>> {
    let rows = match device {
        Some(serial) => {
            sqlx::query(&format!("SELECT {CERT_COLUMNS} WHERE d.serial = $1 ORDER BY c.id"))
                .bind(serial)
                .fetch_all(db.pool())
                .await?
        }
        None => sqlx::query(&format!("SELECT {CERT_COLUMNS} ORDER BY c.id")).fetch_all(db.pool()).await?,
    };
    rows.iter().map(cert_from_row).collect()
}

/// Unrevoked certificates whose validity ends within `days` days from now (including those already expired).
pub async fn expiring(db: &Db, days: u32) -> Result<Vec<CertificateRecord>> {
    let limit = now() + i64::from(days) * 86_400;
    let rows = sqlx::query(&format!(
        "SELECT {CERT_COLUMNS} WHERE c.revoked_at IS NULL AND c.not_after <= $1 ORDER BY c.not_after"
    ))
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(cert_from_row).collect()
}

/// The DER of one certificate (by serial number, hex).
pub async fn certificate_der(db: &Db, serial_number: &str) -> Result<Vec<u8>> {
    let serial = normalize_serial(serial_number)?;
    let rows =
        sqlx::query("SELECT der FROM certificates WHERE serial_number = $1").bind(&serial).fetch_all(db.pool()).await?;
    match rows.as_slice() {
        [one] => Ok(one.try_get("der")?),
        [] => Err(CentralError::NotFound(format!("certificate {serial}"))),
        _ => Err(CentralError::Conflict(format!("several certificates have serial number {serial}"))),
    }
}

/// Lower-case hex without separators or leading zero bytes, the form serial numbers are stored in.
pub fn normalize_serial(s: &str) -> Result<String> {
    let hexdigits: String = s.chars().filter(|c| !matches!(c, ':' | ' ')).collect::<String>().to_ascii_lowercase();
    let bytes = hex::decode(if hexdigits.len() % 2 == 1 { format!("0{hexdigits}") } else { hexdigits })
        .map_err(|e| CentralError::Invalid(format!("serial number {s:?}: {e}")))?;
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len().saturating_sub(1));
    Ok(hex::encode(&bytes[first..]))
}

/// Why a certificate is revoked (RFC 5280 CRLReason).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevocationReason {
    /// No reason given.
    Unspecified,
    /// The private key leaked.
    KeyCompromise,
    /// The device moved elsewhere.
    AffiliationChanged,
    /// A newer certificate replaces it.
    Superseded,
    /// The device is out of service.
    CessationOfOperation,
    /// Temporarily on hold.
    CertificateHold,
    /// The entitlement was withdrawn.
    PrivilegeWithdrawn,
}

impl RevocationReason {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "key-compromise",
            RevocationReason::AffiliationChanged => "affiliation-changed",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessation-of-operation",
            RevocationReason::CertificateHold => "certificate-hold",
            RevocationReason::PrivilegeWithdrawn => "privilege-withdrawn",
        }
    }

    /// The rcgen (CRL entry) form.
    pub fn to_rcgen(self) -> rcgen::RevocationReason {
        match self {
            RevocationReason::Unspecified => rcgen::RevocationReason::Unspecified,
            RevocationReason::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
            RevocationReason::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
            RevocationReason::Superseded => rcgen::RevocationReason::Superseded,
            RevocationReason::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
            RevocationReason::CertificateHold => rcgen::RevocationReason::CertificateHold,
            RevocationReason::PrivilegeWithdrawn => rcgen::RevocationReason::PrivilegeWithdrawn,
        }
    }
}

impl std::str::FromStr for RevocationReason {
    type Err = CentralError;
    fn from_str(s: &str) -> Result<Self> {
        [
            RevocationReason::Unspecified,
            RevocationReason::KeyCompromise,
            RevocationReason::AffiliationChanged,
            RevocationReason::Superseded,
            RevocationReason::CessationOfOperation,
            RevocationReason::CertificateHold,
            RevocationReason::PrivilegeWithdrawn,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
        .ok_or_else(|| CentralError::Invalid(format!("revocation reason {s:?}")))
    }
}

/// Marks a certificate revoked (by serial number) inside `tx` and returns it with the name of the CA that issued
/// it, if it is one of ours (its CRL must then be re-published in the same transaction).
pub async fn revoke_in(
    tx: &mut Tx,
    serial_number: &str,
    reason: RevocationReason,
) -> Result<(CertificateRecord, Option<String>)> {
    let serial = normalize_serial(serial_number)?;
    let rows = sqlx::query("SELECT id, revoked_at, ca_id FROM certificates WHERE serial_number = $1")
        .bind(&serial)
        .fetch_all(&mut **tx)
        .await?;
    let row = match rows.as_slice() {
        [one] => one,
        [] => return Err(CentralError::NotFound(format!("certificate {serial}"))),
        _ => return Err(CentralError::Conflict(format!("several certificates have serial number {serial}"))),
    };
    if row.try_get::<Option<i64>, _>("revoked_at")?.is_some() {
        return Err(CentralError::Conflict(format!("certificate {serial} is revoked already")));
    }
    let id: i64 = row.try_get("id")?;
    let ca_id: Option<i64> = row.try_get("ca_id")?;
    sqlx::query("UPDATE certificates SET revoked_at = $1, revocation_reason = $2 WHERE id = $3")
        .bind(now())
        .bind(reason.as_str())
        .bind(id)
        .execute(&mut **tx)
        .await?;
    let ca = match ca_id {
        Some(ca_id) => Some(
            sqlx::query("SELECT name FROM cas WHERE id = $1")
                .bind(ca_id)
                .fetch_one(&mut **tx)
                .await?
                .try_get("name")?,
        ),
        None => None,
    };
    let row = sqlx::query(&format!("SELECT {CERT_COLUMNS} WHERE c.id = $1")).bind(id).fetch_one(&mut **tx).await?;
    Ok((cert_from_row(&row)?, ca))
}
