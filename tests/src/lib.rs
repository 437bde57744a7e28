//! Helpers of certvault's end-to-end and interop tests: a real vaultd per test, application certificates made at run
//! time, PKI directories for the async-opcua peer, and the result matrix the interop tests print.
//!
//! Every key and certificate is generated at run time into temporary directories; every spawned process is killed
//! when its handle drops.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use base64::Engine as _;
use certvault::container::{Container, KdfParams};
use certvault::csr::{self, CsrRequest};
use certvault::soft::{generate_pkcs8, SoftKey};
use certvault::{DaemonClient, KeyAlgorithm, KeyPolicy, KeySelector, KeyStore, SharedKey};
use certvault_opcua::channel::asymmetric::LocalIdentity;
use certvault_opcua::channel::policy::{SecurityMode, SecurityPolicy};
use zeroize::Zeroizing;

/// The user PIN of test containers.
pub const PIN: &[u8] = b"123456";
/// The admin PIN of test containers.
pub const ADMIN_PIN: &[u8] = b"admin-pin-42";
/// Cheap Argon2id so tests stay fast; real containers use the default cost.
pub const TEST_KDF: KdfParams = KdfParams { m_kib: 256, t: 1, p: 1 };
/// Bound for any one network step, so a broken exchange fails the test instead of hanging it.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
            .with_test_writer()
            .try_init();
    });
}

/// Policy None and every non-deprecated policy with Sign and SignAndEncrypt: the interop matrix.
pub fn matrix_cases() -> Vec<(SecurityPolicy, SecurityMode)> {
    let mut cases = vec![(SecurityPolicy::None, SecurityMode::None)];
    for policy in
        [SecurityPolicy::Basic256Sha256, SecurityPolicy::Aes128Sha256RsaOaep, SecurityPolicy::Aes256Sha256RsaPss]
    {
        for mode in [SecurityMode::Sign, SecurityMode::SignAndEncrypt] {
            cases.push((policy, mode));
        }
    }
    cases
}

/// A running vaultd serving one fresh container in its own temporary directory; killed on drop.
pub struct Vaultd {
    dir: tempfile::TempDir,
    socket: PathBuf,
    child: Option<Child>,
}

impl Vaultd {
    /// Makes a container and starts `exe` on it (integration tests pass `env!("CARGO_BIN_EXE_vaultd")`, the daemon
    /// built by this package; `CERTVAULT_VAULTD` overrides it, e.g. with certvault's own `vaultd`).
    pub fn start(exe: &str) -> Vaultd {
        let exe = std::env::var("CERTVAULT_VAULTD").unwrap_or_else(|_| exe.to_owned());
        let dir = tempfile::tempdir().expect("tempdir");
        let container = dir.path().join("dongle.cvault");
        Container::create(&container, "CV-OPCUA-TEST", PIN, ADMIN_PIN, TEST_KDF, 3).expect("create container");
        let socket = dir.path().join("vaultd.sock");
        let child = spawn_vaultd(&exe, &container, &socket);
        Vaultd { dir, socket, child: Some(child) }
    }

    /// A logged-in client.
    pub fn client(&self) -> DaemonClient {
        let c = DaemonClient::connect(&self.socket, None).expect("connect to vaultd");
        c.login(PIN).expect("login");
        c
    }

    /// Generates an RSA key inside the daemon and returns a handle to it: the key never enters this process.
    pub fn generate_rsa(&self, label: &str, bits: u32) -> SharedKey {
        let c = self.client();
        c.generate(label, KeyAlgorithm::Rsa { bits }, KeyPolicy::default()).expect("generate in vaultd");
        c.key(&KeySelector::Label(label.to_owned())).expect("key handle")
    }

    /// The daemon's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Vaultd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_vaultd(exe: &str, container: &Path, socket: &Path) -> Child {
    let mut child = Command::new(exe)
        .arg("--container")
        .arg(container)
        .arg("--socket")
        .arg(socket)
        .env("CERTVAULT_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {exe}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut s) = child.stderr.take() {
                let _ = s.read_to_string(&mut err);
            }
            panic!("vaultd exited with {status}: {err}");
        }
        if UnixStream::connect(socket).is_ok() {
            // Drain the daemon's log so it can never block on a full pipe.
            if let Some(mut err) = child.stderr.take() {
                std::thread::spawn(move || {
                    let mut s = String::new();
                    let _ = err.read_to_string(&mut s);
                    if !s.is_empty() {
                        eprintln!("vaultd said:\n{s}");
                    }
                });
            }
            return child;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vaultd did not listen within 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A software key in this process (for the client side of tests; the product keeps keys in a vault).
pub fn soft_key(bits: u32, label: &str) -> SharedKey {
    let pkcs8 = generate_pkcs8(KeyAlgorithm::Rsa { bits }).expect("generate key");
    Arc::new(
        SoftKey::from_pkcs8(pkcs8, label.as_bytes().to_vec(), label.to_owned(), true, KeyPolicy::default())
            .expect("load key"),
    )
}

/// The certificate request of an application instance on this host: ApplicationUri, `localhost`, 127.0.0.1.
pub fn application_request(name: &str, application_uri: &str) -> CsrRequest {
    CsrRequest {
        common_name: name.to_owned(),
        organization: Some("certvault tests".into()),
        application_uri: Some(application_uri.to_owned()),
        dns_names: vec!["localhost".into()],
        ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
    }
}

/// A self-signed application instance certificate for `key`, signed inside the key's vault.
pub fn self_signed(key: &SharedKey, name: &str, application_uri: &str) -> Vec<u8> {
    csr::self_signed(key.as_ref(), &application_request(name, application_uri), Duration::from_secs(86_400))
        .expect("self-signed certificate")
}

/// Our application identity: `key` and a fresh self-signed certificate for it.
pub fn identity(key: SharedKey, name: &str, application_uri: &str) -> LocalIdentity {
    let cert = self_signed(&key, name, application_uri);
    LocalIdentity::new(key, cert).expect("identity")
}

/// The PKI directory of an async-opcua peer (`own/cert.der`, `private/private.pem`, `trusted/`, `rejected/`),
/// with a key and self-signed certificate made at run time. The peer is not our product, so its key is a file.
pub struct PeerPki {
    dir: tempfile::TempDir,
    /// The peer's certificate (DER).
    pub certificate: Vec<u8>,
}

impl PeerPki {
    /// Makes the directory and the peer's RSA-2048 key and certificate.
    pub fn new(name: &str, application_uri: &str) -> PeerPki {
        let dir = tempfile::tempdir().expect("tempdir");
        let pkcs8: Zeroizing<Vec<u8>> = generate_pkcs8(KeyAlgorithm::Rsa { bits: 2048 }).expect("generate key");
        let key: SharedKey = Arc::new(
            SoftKey::from_pkcs8(pkcs8.clone(), b"peer".to_vec(), "peer".into(), true, KeyPolicy::default())
                .expect("load key"),
        );
        let certificate = self_signed(&key, name, application_uri);
        for sub in ["own", "private", "trusted", "rejected"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("pki dir");
        }
        std::fs::write(dir.path().join("own/cert.der"), &certificate).expect("write cert");
        std::fs::write(dir.path().join("private/private.pem"), pem("PRIVATE KEY", &pkcs8)).expect("write key");
        PeerPki { dir, certificate }
    }

    /// The PKI root.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Trusts `certificate` (DER) as async-opcua expects: a file in `trusted/`.
    pub fn trust(&self, name: &str, certificate: &[u8]) {
        std::fs::write(self.dir.path().join("trusted").join(format!("{name}.der")), certificate).expect("trust");
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    let _ = writeln!(out, "-----END {label}-----");
    out
}

/// One row of an interop matrix.
#[derive(Debug, Clone)]
pub struct MatrixRow {
    /// Policy name.
    pub policy: SecurityPolicy,
    /// Mode.
    pub mode: SecurityMode,
    /// "client -> server".
    pub pair: String,
    /// `Ok(detail)` or `Err(why)`.
    pub outcome: Result<String, String>,
}

/// The results of an interop run.
#[derive(Debug, Default)]
pub struct Matrix {
    rows: Vec<MatrixRow>,
}

impl Matrix {
    /// Records one case.
    pub fn record(&mut self, policy: SecurityPolicy, mode: SecurityMode, pair: &str, outcome: Result<String, String>) {
        self.rows.push(MatrixRow { policy, mode, pair: pair.to_owned(), outcome });
    }

    /// The rows that failed.
    pub fn failures(&self) -> Vec<&MatrixRow> {
        self.rows.iter().filter(|r| r.outcome.is_err()).collect()
    }

    /// Prints the table (policy x mode x pair -> ok/failed) to stdout, where `cargo test -- --nocapture` shows it.
    pub fn print(&self, title: &str) {
        println!("\n{title}");
        println!("{:<24} {:<15} {:<36} result", "policy", "mode", "pair");
        for r in &self.rows {
            let result = match &r.outcome {
                Ok(detail) => format!("ok ({detail})"),
                Err(why) => format!("FAILED: {why}"),
            };
            println!("{:<24} {:<15} {:<36} {result}", r.policy.name(), format!("{:?}", r.mode), r.pair);
        }
    }
}
