//! Storage: one `sqlx` pool over SQLite (a file, created on first use) or PostgreSQL, chosen by the URL, with the
//! schema migrations embedded per backend (the SQL differs only in identity columns and the blob type).

use std::path::Path;
use std::sync::Once;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Transaction};

use crate::error::{CentralError, Result};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// Which database the pool talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// The central's database: a pool and its backend.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

/// A database transaction: every state change of the central runs in one.
pub type Tx = Transaction<'static, Any>;

impl Db {
    /// Opens the database `location` names and brings its schema up to date. `location` is a `postgres://` or
    /// `postgresql://` URL, a `sqlite:` URL, or a plain file path (SQLite; the file and its directory are created).
    pub async fn open(location: &str) -> Result<Db> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let (url, backend) = if location.starts_with("postgres://") || location.starts_with("postgresql://") {
            (location.to_owned(), Backend::Postgres)
        } else if location.starts_with("sqlite:") {
            (location.to_owned(), Backend::Sqlite)
        } else {
            let path = Path::new(location);
            if let Some(dir) = path.parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| CentralError::io(format!("creating database directory {}", dir.display()), e))?;
                }
            }
            // The path becomes a URL: escape what a URL would read as a query, a fragment or an escape.
            let mut escaped = String::with_capacity(location.len());
            for c in location.chars() {
                match c {
                    '%' => escaped.push_str("%25"),
                    '?' => escaped.push_str("%3F"),
                    '#' => escaped.push_str("%23"),
                    ' ' => escaped.push_str("%20"),
                    c => escaped.push(c),
                }
            }
            (format!("sqlite://{escaped}?mode=rwc"), Backend::Sqlite)
        };
        // SQLite serialises writers anyway; one connection avoids SQLITE_BUSY between our own transactions.
        let max = if backend == Backend::Sqlite { 1 } else { 8 };
        let pool = AnyPoolOptions::new().max_connections(max).connect(&url).await?;
        let db = Db { pool, backend };
        db.migrate().await?;
        Ok(db)
    }

    /// Applies the embedded migrations that have not run yet.
    pub async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    /// The pool, for reads.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a transaction.
    pub async fn begin(&self) -> Result<Tx> {
        Ok(self.pool.begin().await?)
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Now, as Unix seconds.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
