//! Storage on real databases: a SQLite file made on first use (and reopened), and a throwaway PostgreSQL cluster
//! when PostgreSQL is installed (`CERTVAULT_REQUIRE_POSTGRES=1` turns a missing one into a failure).

mod common;

use certvault_central::registry::{self, Entitlement, KeyOriginKind, NewOrderItem};
use certvault_central::{CentralError, Db};

fn item(label: &str) -> NewOrderItem {
    NewOrderItem {
        label: label.into(),
        key_algorithm: "rsa2048".into(),
        application_uri: format!("urn:test:{label}"),
        host_names: vec!["localhost".into(), "127.0.0.1".into()],
        validity_days: 30,
        issuer: "self-signed".into(),
        key_origin: KeyOriginKind::Device,
    }
}

async fn exercise(db: &Db) {
    registry::add_device_type(db, "filler", "bottle filling line").await.unwrap();
    let err = registry::add_device_type(db, "filler", "again").await.unwrap_err();
    assert!(matches!(err, CentralError::Conflict(_)), "{err}");
    assert_eq!(registry::device_types(db).await.unwrap().len(), 1);

    let e = Entitlement { serial: "CV-1".into(), device_type: "filler".into(), ..Default::default() };
    let d = registry::entitle(db, &e).await.unwrap();
    assert!(d.entitled);
    assert_eq!(d.last_counter, 0);
    let missing = Entitlement { serial: "CV-2".into(), device_type: "nope".into(), ..Default::default() };
    assert!(matches!(registry::entitle(db, &missing).await.unwrap_err(), CentralError::NotFound(_)));

    let order = registry::create_order(db, "CV-1", &[item("app"), item("user")]).await.unwrap();
    assert_eq!(order.status, "open");
    assert_eq!(order.items.len(), 2);
    assert_eq!(order.items[0].item.host_names, vec!["localhost".to_string(), "127.0.0.1".to_string()]);
    // The same label twice in open orders: refused, and nothing was written.
    let err = registry::create_order(db, "CV-1", &[item("other"), item("app")]).await.unwrap_err();
    assert!(matches!(err, CentralError::Conflict(_)), "{err}");
    assert_eq!(registry::orders(db, None).await.unwrap().len(), 1);
    assert!(matches!(
        registry::create_order(db, "CV-9", &[item("x")]).await.unwrap_err(),
        CentralError::UnknownDevice(_)
    ));
    let mut bad = item("bad");
    bad.issuer = "ca:missing".into();
    assert!(matches!(registry::create_order(db, "CV-1", &[bad]).await.unwrap_err(), CentralError::NotFound(_)));
    bad = item("bad");
    bad.key_algorithm = "rsa1024".into();
    assert!(matches!(registry::create_order(db, "CV-1", &[bad]).await.unwrap_err(), CentralError::Invalid(_)));

    let d = registry::disentitle(db, "CV-1").await.unwrap();
    assert!(!d.entitled);
    assert_eq!(registry::devices(db).await.unwrap().len(), 1);
    assert!(registry::unconfirmed(db).await.unwrap().is_empty());
    assert!(registry::certificates(db, None).await.unwrap().is_empty());
    assert!(registry::expiring(db, 30).await.unwrap().is_empty());
}

#[tokio::test]
async fn sqlite_file_is_created_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub dir/#1 100%?/central.db");
    assert!(!path.exists());
    let db = Db::open(&path.display().to_string()).await.unwrap();
    assert!(path.exists(), "the SQLite file is made on first use");
    exercise(&db).await;
    db.close().await;
    // Reopening runs the migrations again (a no-op) and finds the data.
    let db = Db::open(&path.display().to_string()).await.unwrap();
    assert_eq!(registry::orders(&db, Some("CV-1")).await.unwrap().len(), 1);
    assert_eq!(registry::device(&db, "CV-1").await.unwrap().device_type, "filler");
}

#[tokio::test]
async fn postgres_through_the_same_code() {
    let Some(pg) = common::PgCluster::start() else { return };
    let db = Db::open(&pg.url).await.unwrap();
    assert_eq!(db.backend(), certvault_central::db::Backend::Postgres);
    exercise(&db).await;
    db.close().await;
    let db = Db::open(&pg.url).await.unwrap();
    assert_eq!(registry::orders(&db, Some("CV-1")).await.unwrap().len(), 1);
    db.close().await;
}
