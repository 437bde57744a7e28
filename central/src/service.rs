//! [`Central`]: the database plus the issuers, the key maker and the CRL publisher, shared by the HTTP API and the
//! CLI. CAs are loaded from the database on first use and their vault keys opened then.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::db::{now, Db, Tx};
use crate::envelope::{Envelope, NotWired};
use crate::error::{CentralError, Result};
use crate::issuer::{External, Issuer, IssuerRef, OwnCa, SelfSigned};
use crate::keymaker::KeyMaker;
use crate::registry::{self, CertificateRecord, RevocationReason};

/// A CA as listed: name, key URI (without secrets), certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaInfo {
    /// Name (`ca:NAME` in orders).
    pub name: String,
    /// The vault URI of its key.
    pub key_uri: String,
    /// Its certificate, DER base64.
    pub certificate: String,
    /// The number of the last CRL published.
    pub crl_number: i64,
}

/// The certificate management central.
pub struct Central {
    db: Db,
    cas: Mutex<HashMap<String, Arc<OwnCa>>>,
    externals: HashMap<String, Arc<External>>,
    pub(crate) key_maker: Option<Arc<dyn KeyMaker>>,
    pub(crate) backup_spki: Option<Vec<u8>>,
    crl_dir: Option<PathBuf>,
    crl_validity: Duration,
    envelope: Arc<dyn Envelope>,
}

impl std::fmt::Debug for Central {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Central").field("db", &self.db).field("crl_dir", &self.crl_dir).finish_non_exhaustive()
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CentralError::Config(format!("a blocking vault or issuer call failed: {e}")))?
}

impl Central {
    /// A central on `db`, with no external issuers, no key maker and no CRL directory.
    pub fn new(db: Db) -> Central {
        Central {
            db,
            cas: Mutex::new(HashMap::new()),
            externals: HashMap::new(),
            key_maker: None,
            backup_spki: None,
            crl_dir: None,
            crl_validity: Duration::from_secs(7 * 86_400),
            envelope: Arc::new(NotWired),
        }
    }

    /// Sets the request/update/receipt file formats.
    pub fn with_envelope(mut self, envelope: Arc<dyn Envelope>) -> Central {
        self.envelope = envelope;
        self
    }

    /// Verifies a request file, processes it and returns the signed update file.
    pub async fn process_file(&self, body: &[u8]) -> Result<Vec<u8>> {
        let request = self.envelope.verify_request(body)?;
        let (tx, issued) = self.process_uncommitted(&request).await?;
        // Signing goes to the vault (a socket or a token): off the async workers.
        let envelope = Arc::clone(&self.envelope);
        let update = blocking(move || envelope.seal_update(&issued)).await?;
        tx.commit().await?;
        Ok(update)
    }

    /// Verifies a receipt file against the device key registered for the dongle it names, and records it.
    pub async fn receipt_file(&self, body: &[u8]) -> Result<crate::processing::ReceiptOutcome> {
        let serial = self.envelope.receipt_serial(body)?;
        let row = sqlx::query("SELECT device_public_key FROM devices WHERE serial = $1")
            .bind(&serial)
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| CentralError::UnknownDevice(serial.clone()))?;
        let device_key: Option<Vec<u8>> = row.try_get("device_public_key")?;
        let device_key = device_key.ok_or_else(|| {
            CentralError::NotFound(format!("device {serial} has no device key yet: it never sent a request"))
        })?;
        let receipt = self.envelope.verify_receipt(body, &device_key)?;
        self.receipt(&receipt).await
    }

    /// Adds an external CA plug-in.
    pub fn with_external(mut self, external: External) -> Central {
        self.externals.insert(external.name.clone(), Arc::new(external));
        self
    }

    /// Enables central key generation: `maker` makes and seals keys, `backup_spki` is the public half of the
    /// backup key (its private half stays in the central's vault).
    pub fn with_key_maker(mut self, maker: Arc<dyn KeyMaker>, backup_spki: Vec<u8>) -> Central {
        self.key_maker = Some(maker);
        self.backup_spki = Some(backup_spki);
        self
    }

    /// Publishes every CRL also as `DIR/NAME.crl` (DER).
    pub fn with_crl_dir(mut self, dir: PathBuf) -> Central {
        self.crl_dir = Some(dir);
        self
    }

    /// How long a published CRL is valid (its nextUpdate).
    pub fn with_crl_validity(mut self, validity: Duration) -> Central {
        self.crl_validity = validity;
        self
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Creates a CA named `name` whose key is the vault key at `key_uri`: a self-signed CA certificate is made
    /// inside that vault and recorded.
    pub async fn create_ca(&self, name: &str, key_uri: &str, common_name: &str, validity_days: u32) -> Result<CaInfo> {
        IssuerRef::parse(&format!("ca:{name}"))?;
        if sqlx::query("SELECT id FROM cas WHERE name = $1").bind(name).fetch_optional(self.db.pool()).await?.is_some()
        {
            return Err(CentralError::Conflict(format!("CA {name:?} exists")));
        }
        let uri: certvault::uri::KeyUri =
            key_uri.parse().map_err(|e| CentralError::Invalid(format!("key URI: {e}")))?;
        let (n, cn) = (name.to_owned(), common_name.to_owned());
        let ca = blocking(move || {
            let key = certvault::store::open_key(&uri)?;
            OwnCa::create(&n, key, &cn, validity_days)
        })
        .await?;
        let mut tx = self.db.begin().await?;
        sqlx::query("INSERT INTO cas (name, key_uri, certificate, crl_number, created_at) VALUES ($1, $2, $3, 0, $4)")
            .bind(name)
            .bind(key_uri)
            .bind(ca.certificate().to_vec())
            .bind(now())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let info = CaInfo {
            name: name.into(),
            key_uri: redact(key_uri),
            certificate: B64.encode(ca.certificate()),
            crl_number: 0,
        };
        self.lock_cas()?.insert(name.to_owned(), Arc::new(ca));
        Ok(info)
    }

    fn lock_cas(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, Arc<OwnCa>>>> {
        self.cas.lock().map_err(|_| CentralError::Config("the CA cache lock is poisoned".into()))
    }

    /// Every CA.
    pub async fn cas(&self) -> Result<Vec<CaInfo>> {
        let rows = sqlx::query("SELECT name, key_uri, certificate, crl_number FROM cas ORDER BY name")
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(CaInfo {
                    name: r.try_get("name")?,
                    key_uri: redact(&r.try_get::<String, _>("key_uri")?),
                    certificate: B64.encode(r.try_get::<Vec<u8>, _>("certificate")?),
                    crl_number: r.try_get("crl_number")?,
                })
            })
            .collect()
    }

    /// The CA named `name`, its key opened on first use.
    pub async fn ca(&self, name: &str) -> Result<Arc<OwnCa>> {
        let mut conn = self.db.pool().acquire().await?;
        self.ca_from(&mut conn, name).await
    }

    /// [`Central::ca`] inside a transaction (SQLite has one connection: the pool would wait for the transaction).
    pub(crate) async fn ca_in(&self, tx: &mut Tx, name: &str) -> Result<Arc<OwnCa>> {
        self.ca_from(tx, name).await
    }

    async fn ca_from(&self, conn: &mut sqlx::AnyConnection, name: &str) -> Result<Arc<OwnCa>> {
        if let Some(ca) = self.lock_cas()?.get(name) {
            return Ok(ca.clone());
        }
        let row = sqlx::query("SELECT key_uri, certificate FROM cas WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| CentralError::NotFound(format!("CA {name:?}")))?;
        let key_uri: String = row.try_get("key_uri")?;
        let certificate: Vec<u8> = row.try_get("certificate")?;
        let uri: certvault::uri::KeyUri =
            key_uri.parse().map_err(|e| CentralError::Config(format!("CA {name}: key URI: {e}")))?;
        let n = name.to_owned();
        let ca = Arc::new(
            blocking(move || {
                let key = certvault::store::open_key(&uri)?;
                OwnCa::new(&n, key, certificate)
            })
            .await?,
        );
        self.lock_cas()?.insert(name.to_owned(), ca.clone());
        Ok(ca)
    }

    /// The issuer an order item names, looked up inside `tx`.
    pub(crate) async fn issuer_in(&self, tx: &mut Tx, reference: &IssuerRef) -> Result<Arc<dyn Issuer>> {
        match reference {
            IssuerRef::SelfSigned => Ok(Arc::new(SelfSigned)),
            IssuerRef::Ca(name) => Ok(self.ca_in(tx, name).await?),
            IssuerRef::External(name) => Ok(self
                .externals
                .get(name)
                .cloned()
                .ok_or_else(|| CentralError::Config(format!("no external issuer {name:?} is configured")))?),
        }
    }

    /// Signs and records a new CRL for CA `name` inside `tx` (CRL number + 1).
    async fn crl_in(&self, tx: &mut Tx, name: &str) -> Result<Vec<u8>> {
        let ca = self.ca_in(tx, name).await?;
        let row = sqlx::query("SELECT id, crl_number FROM cas WHERE name = $1").bind(name).fetch_one(&mut **tx).await?;
        let ca_id: i64 = row.try_get("id")?;
        let number: i64 = row.try_get::<i64, _>("crl_number")? + 1;
        sqlx::query("UPDATE cas SET crl_number = $1 WHERE id = $2").bind(number).bind(ca_id).execute(&mut **tx).await?;
        let rows = sqlx::query(
            "SELECT serial_number, revoked_at, revocation_reason FROM certificates \
             WHERE ca_id = $1 AND revoked_at IS NOT NULL ORDER BY id",
        )
        .bind(ca_id)
        .fetch_all(&mut **tx)
        .await?;
        let mut revoked = Vec::with_capacity(rows.len());
        for r in &rows {
            let reason: Option<String> = r.try_get("revocation_reason")?;
            let reason = reason.as_deref().unwrap_or("unspecified").parse::<RevocationReason>()?;
            revoked.push((r.try_get::<String, _>("serial_number")?, r.try_get::<i64, _>("revoked_at")?, reason));
        }
        let validity = self.crl_validity;
        let number_u = u64::try_from(number).map_err(|_| CentralError::Invalid("CRL number".into()))?;
        let der = blocking(move || ca.sign_crl(number_u, &revoked, validity)).await?;
        let this_update = now();
        let next_update = this_update + i64::try_from(validity.as_secs()).unwrap_or(i64::MAX / 2);
        sqlx::query("INSERT INTO crls (ca_id, crl_number, this_update, next_update, der) VALUES ($1, $2, $3, $4, $5)")
            .bind(ca_id)
            .bind(number)
            .bind(this_update)
            .bind(next_update)
            .bind(der.clone())
            .execute(&mut **tx)
            .await?;
        Ok(der)
    }

    fn write_crl_file(&self, name: &str, der: &[u8]) -> Result<()> {
        let Some(dir) = &self.crl_dir else { return Ok(()) };
        std::fs::create_dir_all(dir).map_err(|e| CentralError::io(format!("creating {}", dir.display()), e))?;
        let tmp = dir.join(format!(".{name}.crl.tmp"));
        let path = dir.join(format!("{name}.crl"));
        std::fs::write(&tmp, der).map_err(|e| CentralError::io(format!("writing {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &path).map_err(|e| CentralError::io(format!("publishing {}", path.display()), e))?;
        tracing::info!(ca = name, path = %path.display(), "CRL published");
        Ok(())
    }

    /// Signs, records and publishes a new CRL for CA `name`.
    pub async fn publish_crl(&self, name: &str) -> Result<Vec<u8>> {
        let mut tx = self.db.begin().await?;
        let der = self.crl_in(&mut tx, name).await?;
        tx.commit().await?;
        self.write_crl_file(name, &der)?;
        Ok(der)
    }

    /// The latest CRL of CA `name` that is still valid; a new one is published when there is none.
    pub async fn crl(&self, name: &str) -> Result<Vec<u8>> {
        let row = sqlx::query(
            "SELECT c.der FROM crls c JOIN cas a ON a.id = c.ca_id WHERE a.name = $1 AND c.next_update > $2 \
             ORDER BY c.crl_number DESC LIMIT 1",
        )
        .bind(name)
        .bind(now() + 3600)
        .fetch_optional(self.db.pool())
        .await?;
        match row {
            Some(r) => Ok(r.try_get("der")?),
            None => self.publish_crl(name).await,
        }
    }

    /// Revokes a certificate (by serial number, hex) and, when one of our CAs issued it, publishes that CA's new
    /// CRL in the same transaction.
    pub async fn revoke(&self, serial_number: &str, reason: RevocationReason) -> Result<CertificateRecord> {
        let mut tx = self.db.begin().await?;
        let (record, ca) = registry::revoke_in(&mut tx, serial_number, reason).await?;
        let crl = match &ca {
            Some(name) => Some(self.crl_in(&mut tx, name).await?),
            None => None,
        };
        tx.commit().await?;
        if let (Some(name), Some(der)) = (ca, crl) {
            self.write_crl_file(&name, &der)?;
        }
        tracing::info!(serial = %record.serial_number, reason = reason.as_str(), "certificate revoked");
        Ok(record)
    }
}

/// A key URI for display: the PIN value (when given inline) is dropped.
fn redact(uri: &str) -> String {
    match uri.parse::<certvault::uri::KeyUri>() {
        Ok(certvault::uri::KeyUri::Pkcs11(p)) => p.to_string_redacted(),
        _ => uri.split(['?']).next().unwrap_or_default().to_owned(),
    }
}
