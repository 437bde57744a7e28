//! Helpers of the central's integration tests: a throwaway PostgreSQL cluster, a real vaultd per test, the real key
//! maker over it (and an opener of what it seals, to check in the test which key it is), and `openssl ca`. Everything is made at run time in temporary directories; every
//! process is stopped on drop.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use certvault::container::{Container, KdfParams};
use certvault::soft::SoftKey;
use certvault::{DaemonClient, DecryptAlg, KeyAlgorithm, KeyPolicy, KeySelector, KeyStore, SharedKey, VaultKey};
use certvault_central::keymaker::KeyMaker;
use certvault_central::Db;
use zeroize::Zeroizing;

pub const PIN: &[u8] = b"123456";
pub const ADMIN_PIN: &[u8] = b"admin-pin-42";

// ---------------------------------------------------------------------------------------------------------------
// PostgreSQL

/// A PostgreSQL cluster in a temporary directory, listening only on a Unix socket there; stopped on drop.
pub struct PgCluster {
    dir: tempfile::TempDir,
    pg_ctl: PathBuf,
    as_postgres: bool,
    /// The connection URL.
    pub url: String,
}

fn find_pg_bin(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    dirs.push("/usr/local/bin".into());
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect();
        versions.sort();
        dirs.extend(versions.into_iter().rev());
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

impl PgCluster {
    /// Starts a cluster, or returns None (skip) when PostgreSQL is not installed, unless
    /// `CERTVAULT_REQUIRE_POSTGRES=1`, which makes a missing PostgreSQL a failure.
    pub fn start() -> Option<PgCluster> {
        let required = std::env::var("CERTVAULT_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
        let (Some(initdb), Some(pg_ctl)) = (find_pg_bin("initdb"), find_pg_bin("pg_ctl")) else {
            assert!(!required, "CERTVAULT_REQUIRE_POSTGRES=1 but initdb/pg_ctl were not found");
            eprintln!(
                "skipping the PostgreSQL part: initdb/pg_ctl not found (set CERTVAULT_REQUIRE_POSTGRES=1 to fail)"
            );
            return None;
        };
        let dir = tempfile::Builder::new().prefix("cvpg").tempdir_in("/tmp").expect("tempdir");
        // PostgreSQL refuses to run as root: then the cluster belongs to the `postgres` user.
        let as_postgres = is_root();
        if as_postgres {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
            let status = Command::new("chown").arg("postgres").arg(dir.path()).status().expect("chown");
            assert!(status.success(), "chown postgres {}", dir.path().display());
        }
        let data = dir.path().join("data");
        let run = |exe: &Path, args: &[&str]| {
            let mut cmd = if as_postgres {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(exe);
                c
            } else {
                Command::new(exe)
            };
            let out = cmd.args(args).output().unwrap_or_else(|e| panic!("running {}: {e}", exe.display()));
            assert!(
                out.status.success(),
                "{} {args:?} failed: {}{}",
                exe.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let data_s = data.display().to_string();
        run(&initdb, &["-D", &data_s, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"]);
        let opts = format!("-c listen_addresses='' -k {} -p 5432 -c fsync=off", dir.path().display());
        let log = dir.path().join("log").display().to_string();
        run(&pg_ctl, &["-D", &data_s, "-o", &opts, "-l", &log, "-w", "-t", "60", "start"]);
        let url = format!("postgres://postgres@localhost/postgres?host={}&port=5432", dir.path().display());
        Some(PgCluster { dir, pg_ctl, as_postgres, url })
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&self.pg_ctl);
            c
        } else {
            Command::new(&self.pg_ctl)
        };
        let _ = cmd.arg("-D").arg(&data).args(["-m", "immediate", "-w", "stop"]).output();
    }
}

/// A fresh SQLite database file in `dir`.
pub async fn sqlite_db(dir: &Path) -> Db {
    Db::open(&dir.join("central.db").display().to_string()).await.expect("open sqlite")
}

// ---------------------------------------------------------------------------------------------------------------
// vaultd

/// A vaultd serving one fresh container; killed on drop.
pub struct TestVaultd {
    dir: tempfile::TempDir,
    socket: PathBuf,
    child: Option<Child>,
    pub serial: String,
}

impl TestVaultd {
    pub fn start(serial: &str) -> TestVaultd {
        let dir = tempfile::tempdir().expect("tempdir");
        let container = dir.path().join("dongle.cvault");
        Container::create(&container, serial, PIN, ADMIN_PIN, KdfParams { m_kib: 256, t: 1, p: 1 }, 3)
            .expect("create container");
        let socket = dir.path().join("vaultd.sock");
        let child = certvault::daemon::launch::start_vaultd(
            Path::new(env!("CARGO_BIN_EXE_central-test-vaultd")),
            &["--container".as_ref(), container.as_os_str()],
            &socket,
            Duration::from_secs(20),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        TestVaultd { dir, socket, child: Some(child), serial: serial.into() }
    }

    pub fn client(&self) -> DaemonClient {
        let c = DaemonClient::connect(&self.socket, None).expect("connect to vaultd");
        c.login(PIN).expect("login");
        c
    }

    /// Makes a key inside the daemon; the handle only reaches it over the socket.
    pub fn generate(&self, label: &str, algorithm: KeyAlgorithm) -> SharedKey {
        let c = self.client();
        c.generate(label, algorithm, KeyPolicy::default()).expect("generate in vaultd");
        c.key(&KeySelector::Label(label.to_owned())).expect("key handle")
    }

    pub fn key_uri(&self, label: &str) -> String {
        let pin = self.dir.path().join("pin");
        std::fs::write(&pin, PIN).expect("pin file");
        format!("vaultd:object={label}?socket={}&pin-source=file:{}", self.socket.display(), pin.display())
    }
}

impl Drop for TestVaultd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Key maker

/// The SPKI of a PKCS#8 key.
pub fn pkcs8_spki(pkcs8: Zeroizing<Vec<u8>>) -> Vec<u8> {
    SoftKey::from_pkcs8(pkcs8, b"k".to_vec(), "k".into(), true, KeyPolicy::default())
        .expect("pkcs8")
        .info()
        .spki_der
        .clone()
}

/// The real key maker over `vault` (backup key `central-backup`, made inside, unwrap-only) and the backup key's
/// public half.
pub fn vaultd_key_maker(vault: &TestVaultd) -> (Arc<dyn KeyMaker>, Vec<u8>) {
    let maker = certvault_central::keymaker::VaultdKeyMaker::new(vault.client(), "central-backup").expect("key maker");
    let backup = maker.backup_spki().to_vec();
    (Arc::new(maker), backup)
}

/// TEST ONLY: opens a key the real key maker sealed (CMS EnvelopedData: RSA-OAEP-SHA-256, AES-256 key wrap with
/// padding) with an ordinary RSA decryption key (inside its vault), to check in the test which key it is. A dongle
/// opens it inside its vault instead.
pub fn open_sealed(der_bytes: &[u8], key: &dyn VaultKey) -> Result<Zeroizing<Vec<u8>>, String> {
    use aws_lc_rs::key_wrap::{AesKek, KeyWrapPadded, AES_256};
    use cms::content_info::ContentInfo;
    use cms::enveloped_data::{EnvelopedData, RecipientInfo};
    use der::Decode as _;
    let ci = ContentInfo::from_der(der_bytes).map_err(|e| e.to_string())?;
    let ed: EnvelopedData = ci.content.decode_as().map_err(|e: der::Error| e.to_string())?;
    let recips = ed.recip_infos.0.into_vec();
    let [RecipientInfo::Ktri(ktri)] = recips.as_slice() else { return Err("one key-transport recipient".into()) };
    let cek = key.decrypt(DecryptAlg::RsaOaepSha256, ktri.enc_key.as_bytes()).map_err(|e| e.to_string())?;
    let wrapped = ed.encrypted_content.encrypted_content.ok_or("no content")?;
    let kek = AesKek::new(&AES_256, &cek).map_err(|e| e.to_string())?;
    let mut out = Zeroizing::new(vec![0u8; wrapped.as_bytes().len()]);
    let n = kek.unwrap_with_padding(wrapped.as_bytes(), &mut out).map_err(|e| e.to_string())?.len();
    out.truncate(n);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------------------------
// openssl

/// Runs openssl with `args`, panicking with its output on failure; returns stdout.
pub fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).output().expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes `der` as PEM to `path`.
pub fn write_pem(path: &Path, label: &str, der: &[u8]) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for c in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(c).unwrap());
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    std::fs::write(path, s).unwrap();
}

/// A real `openssl ca` set up in a temporary directory (its key is a file there: it plays a third party's CA),
/// wrapped as the central's external-CA plug-in.
pub struct OpensslCa {
    pub dir: tempfile::TempDir,
}

impl OpensslCa {
    pub fn new() -> OpensslCa {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("newcerts")).unwrap();
        std::fs::write(d.join("index.txt"), "").unwrap();
        std::fs::write(d.join("serial"), "1000\n").unwrap();
        let cnf = format!(
            "[ ca ]\ndefault_ca = CA_default\n[ CA_default ]\ndir = {dir}\ndatabase = $dir/index.txt\n\
             new_certs_dir = $dir/newcerts\ncertificate = $dir/ca.pem\nprivate_key = $dir/ca.key\nserial = $dir/serial\n\
             default_md = sha256\ndefault_days = 30\npolicy = policy_any\ncopy_extensions = copy\nunique_subject = no\n\
             x509_extensions = leaf_ext\n[ policy_any ]\ncommonName = supplied\n\
             [ leaf_ext ]\nbasicConstraints = CA:FALSE\nauthorityKeyIdentifier = keyid\n",
            dir = d.display()
        );
        std::fs::write(d.join("ca.cnf"), cnf).unwrap();
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &d.join("ca.key").display().to_string(),
            "-out",
            &d.join("ca.pem").display().to_string(),
            "-subj",
            "/CN=External Test CA",
            "-days",
            "30",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        OpensslCa { dir }
    }

    /// The plug-in: `openssl ca` on the CSR file, then the leaf and the CA certificate on stdout.
    pub fn external(&self, name: &str) -> certvault_central::issuer::External {
        let d = self.dir.path().display().to_string();
        let script = format!(
            "openssl ca -batch -config {d}/ca.cnf -notext -in \"$1\" -out {d}/out.pem 2>{d}/err.txt || \
             {{ cat {d}/err.txt >&2; exit 1; }}; cat {d}/out.pem {d}/ca.pem"
        );
        certvault_central::issuer::External {
            name: name.into(),
            command: vec!["sh".into(), "-c".into(), script, "sh".into(), "{csr}".into()],
            csr_input: certvault_central::issuer::CsrInput::File,
            timeout_secs: 60,
        }
    }

    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Database state

/// A text picture of every table's state, to prove a failed step changed nothing.
pub async fn snapshot(db: &Db) -> String {
    use sqlx::Row;
    let mut out = String::new();
    for table in [
        "device_types",
        "devices",
        "request_nonces",
        "cas",
        "crls",
        "orders",
        "order_items",
        "certificates",
        "receipts",
        "key_backups",
    ] {
        let n: i64 = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
            .fetch_one(db.pool())
            .await
            .unwrap()
            .try_get("n")
            .unwrap();
        out.push_str(&format!("{table}={n}\n"));
    }
    for r in sqlx::query(
        "SELECT serial, entitled, last_counter, last_seen, device_public_key, transport_public_key FROM devices ORDER BY serial",
    )
    .fetch_all(db.pool())
    .await
    .unwrap()
    {
        out.push_str(&format!(
            "device {} {} {} {:?} {:?} {:?}\n",
            r.try_get::<String, _>("serial").unwrap(),
            r.try_get::<i64, _>("entitled").unwrap(),
            r.try_get::<i64, _>("last_counter").unwrap(),
            r.try_get::<Option<i64>, _>("last_seen").unwrap(),
            r.try_get::<Option<Vec<u8>>, _>("device_public_key").unwrap().map(|k| k.len()),
            r.try_get::<Option<Vec<u8>>, _>("transport_public_key").unwrap().map(|k| k.len()),
        ));
    }
    for r in sqlx::query("SELECT id, status FROM orders ORDER BY id").fetch_all(db.pool()).await.unwrap() {
        out.push_str(&format!(
            "order {} {}\n",
            r.try_get::<i64, _>("id").unwrap(),
            r.try_get::<String, _>("status").unwrap()
        ));
    }
    for r in sqlx::query("SELECT id, status FROM order_items ORDER BY id").fetch_all(db.pool()).await.unwrap() {
        out.push_str(&format!(
            "item {} {}\n",
            r.try_get::<i64, _>("id").unwrap(),
            r.try_get::<String, _>("status").unwrap()
        ));
    }
    for r in sqlx::query("SELECT name, crl_number FROM cas ORDER BY name").fetch_all(db.pool()).await.unwrap() {
        out.push_str(&format!(
            "ca {} {}\n",
            r.try_get::<String, _>("name").unwrap(),
            r.try_get::<i64, _>("crl_number").unwrap()
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------------------------
// HTTP

/// One HTTP/1.1 exchange over a real TCP connection: returns the status and the body.
pub async fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Vec<u8>) {
    http_auth(addr, method, path, body, None).await
}

/// [`http`] with an `Authorization: Bearer` token.
pub async fn http_auth(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    token: Option<&str>,
) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let body = body.unwrap_or_default();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         {auth}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("end of headers");
    let headers = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status: u16 = headers.split_whitespace().nth(1).expect("status").parse().expect("status code");
    let mut rest = raw[split + 4..].to_vec();
    if headers.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        loop {
            let eol = rest.windows(2).position(|w| w == b"\r\n").expect("chunk size");
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16).expect("hex size");
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            rest = rest[eol + 4 + size..].to_vec();
        }
        rest = out;
    }
    (status, rest)
}
