//! Shared test helpers: a run-time test PKI, a counting/failing key wrapper, and a loopback mutual-TLS harness.
//!
//! Everything takes a [`SharedKey`], so the same helpers run with software keys, keys in vaultd or keys on a
//! PKCS#11 token. Every key is generated at run time; no key material is committed.
#![allow(dead_code)]

pub mod central;
pub mod softhsm;
pub mod vaultd;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use certvault::csr::{self, CsrRequest};
use certvault::soft::{generate_pkcs8, SoftKey};
use certvault::tls::{self, SwappableCertifiedKey};
use certvault::{DecryptAlg, KeyAlgorithm, KeyInfo, KeyPolicy, SharedKey, SignAlg, VaultError, VaultKey};
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::NoServerSessionStorage;
use rustls::{ClientConfig, HandshakeKind, ProtocolVersion, RootCertStore, ServerConfig, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use zeroize::Zeroizing;

/// RSA-2048, the size every backend supports.
pub const RSA2048: KeyAlgorithm = KeyAlgorithm::Rsa { bits: 2048 };

/// The name the leaf certificates carry and clients connect to.
pub const SERVER_NAME: &str = "localhost";

/// Bound for any one network step, so a broken handshake fails the test instead of hanging it.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// A fresh in-process software key.
pub fn soft_key(alg: KeyAlgorithm, label: &str) -> SharedKey {
    let pkcs8: Zeroizing<Vec<u8>> = generate_pkcs8(alg).expect("generate key");
    Arc::new(
        SoftKey::from_pkcs8(pkcs8, label.as_bytes().to_vec(), label.to_string(), true, KeyPolicy::default())
            .expect("load key"),
    )
}

/// A one-level test PKI: a self-signed CA that issues leaf certificates to any vault key.
pub struct TestPki {
    /// The CA's key (any backend).
    pub ca_key: SharedKey,
    /// The CA's self-signed certificate.
    pub ca_cert: CertificateDer<'static>,
}

impl TestPki {
    /// A CA with a fresh software key of `alg`.
    pub fn new(alg: KeyAlgorithm) -> Self {
        Self::with_ca_key(soft_key(alg, "test-ca"))
    }

    /// A CA whose key is `ca_key`.
    pub fn with_ca_key(ca_key: SharedKey) -> Self {
        let der = csr::self_signed_ca(ca_key.as_ref(), "certvault test CA", Duration::from_secs(86_400))
            .expect("self-signed CA");
        TestPki { ca_key, ca_cert: CertificateDer::from(der) }
    }

    /// A trust store holding only this CA.
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_cert.clone()).expect("CA certificate as trust anchor");
        roots
    }

    /// Issues a leaf for `key` (names: `localhost`, 127.0.0.1) and returns the chain leaf first, CA last.
    pub fn issue(&self, key: &SharedKey, common_name: &str) -> Vec<CertificateDer<'static>> {
        let request = CsrRequest {
            common_name: common_name.to_string(),
            organization: Some("certvault tests".into()),
            application_uri: Some(format!("urn:certvault:test:{common_name}")),
            dns_names: vec![SERVER_NAME.into()],
            ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        };
        let leaf =
            csr::issue(self.ca_key.as_ref(), &self.ca_cert, &key.info().spki_der, &request, Duration::from_secs(3_600))
                .expect("issue leaf certificate");
        vec![CertificateDer::from(leaf), self.ca_cert.clone()]
    }

    /// A resolver holding a freshly issued leaf for `key`.
    pub fn resolver(&self, key: &SharedKey, common_name: &str) -> Arc<SwappableCertifiedKey> {
        Arc::new(SwappableCertifiedKey::new(self.issue(key, common_name), key.clone()).expect("matching pair"))
    }
}

/// Wraps a vault key, counts its signatures and the algorithms used, and can be told to refuse signing.
#[derive(Debug)]
pub struct CountingKey {
    inner: SharedKey,
    signs: AtomicUsize,
    algs: Mutex<Vec<SignAlg>>,
    failing: AtomicBool,
}

impl CountingKey {
    /// Wraps `inner`.
    pub fn new(inner: SharedKey) -> Arc<Self> {
        Arc::new(CountingKey {
            inner,
            signs: AtomicUsize::new(0),
            algs: Mutex::new(Vec::new()),
            failing: AtomicBool::new(false),
        })
    }

    /// Signature requests so far (refused ones included).
    pub fn count(&self) -> usize {
        self.signs.load(Ordering::SeqCst)
    }

    /// The algorithm of every signature request so far, in order.
    pub fn algs(&self) -> Vec<SignAlg> {
        self.algs.lock().expect("algs lock").clone()
    }

    /// From now on, refuse (`true`) or make (`false`) signatures.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// This wrapper as a [`SharedKey`].
    pub fn shared(self: &Arc<Self>) -> SharedKey {
        self.clone()
    }

    fn record(&self, alg: SignAlg) -> Result<(), VaultError> {
        self.signs.fetch_add(1, Ordering::SeqCst);
        self.algs.lock().expect("algs lock").push(alg);
        if self.failing.load(Ordering::SeqCst) {
            Err(VaultError::Crypto("test key told to refuse signing".into()))
        } else {
            Ok(())
        }
    }
}

impl VaultKey for CountingKey {
    fn info(&self) -> &KeyInfo {
        self.inner.info()
    }

    fn sign(&self, alg: SignAlg, msg: &[u8]) -> Result<Vec<u8>, VaultError> {
        self.record(alg)?;
        self.inner.sign(alg, msg)
    }

    // Delegated, not left to the default, so a backend's own DER path is what gets exercised and counted once.
    fn sign_der(&self, alg: SignAlg, msg: &[u8]) -> Result<Vec<u8>, VaultError> {
        self.record(alg)?;
        self.inner.sign_der(alg, msg)
    }

    fn decrypt(&self, alg: DecryptAlg, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        self.inner.decrypt(alg, ciphertext)
    }
}

/// What one side saw of a finished connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Negotiated protocol version.
    pub version: ProtocolVersion,
    /// The peer's certificate chain.
    pub peer_certs: Vec<CertificateDer<'static>>,
    /// Full or resumed.
    pub kind: HandshakeKind,
}

fn conn_info(conn: &rustls::CommonState) -> ConnInfo {
    ConnInfo {
        version: conn.protocol_version().expect("version after handshake"),
        peer_certs: conn.peer_certificates().map(<[_]>::to_vec).unwrap_or_default(),
        kind: conn.handshake_kind().expect("kind after handshake"),
    }
}

/// Turns resumption off on both sides, so every handshake is full and signs on both sides.
pub fn disable_resumption(server: &mut ServerConfig, client: &mut ClientConfig) {
    client.resumption = Resumption::disabled();
    server.session_storage = Arc::new(NoServerSessionStorage {});
    server.send_tls13_tickets = 0;
}

/// Mutual-TLS server and client configurations over the given resolvers, resumption off.
pub fn mtls_configs(
    pki: &TestPki,
    server: Arc<SwappableCertifiedKey>,
    client: Arc<SwappableCertifiedKey>,
    version: &'static SupportedProtocolVersion,
) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let provider = tls::default_provider();
    let mut scfg = tls::server_config(provider.clone(), server, pki.roots(), &[version]).expect("server config");
    let mut ccfg = tls::client_config(provider, pki.roots(), client, &[version]).expect("client config");
    disable_resumption(&mut scfg, &mut ccfg);
    (Arc::new(scfg), Arc::new(ccfg))
}

/// A loopback TLS server that answers `ping` with `pong` and reports every connection's outcome.
pub struct TestServer {
    /// Where it listens (127.0.0.1, OS-picked port).
    pub addr: SocketAddr,
    outcomes: mpsc::UnboundedReceiver<Result<ConnInfo, String>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// Starts accepting with `config`.
    pub async fn start(config: Arc<ServerConfig>) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (tx, outcomes) = mpsc::unbounded_channel();
        let acceptor = TlsAcceptor::from(config);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                // One task per connection: a failed handshake must not stop the accept loop.
                tokio::spawn(async move {
                    let outcome = serve_one(acceptor, tcp).await;
                    let _ = tx.send(outcome);
                });
            }
        });
        TestServer { addr, outcomes, task }
    }

    /// The outcome of the next connection the server finished.
    pub async fn next_outcome(&mut self) -> Result<ConnInfo, String> {
        tokio::time::timeout(STEP_TIMEOUT, self.outcomes.recv())
            .await
            .expect("server outcome in time")
            .expect("server task alive")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_one(acceptor: TlsAcceptor, tcp: TcpStream) -> Result<ConnInfo, String> {
    tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    let mut tls = acceptor.accept(tcp).await.map_err(|e| format!("server handshake: {e}"))?;
    let info = conn_info(tls.get_ref().1);
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).await.map_err(|e| format!("server read: {e}"))?;
    if &buf != b"ping" {
        return Err(format!("server got {buf:?}"));
    }
    tls.write_all(b"pong").await.map_err(|e| format!("server write: {e}"))?;
    tls.shutdown().await.map_err(|e| format!("server shutdown: {e}"))?;
    Ok(info)
}

/// Connects to `addr` as [`SERVER_NAME`], does a ping/pong, and reports what the client saw.
pub async fn ping(config: Arc<ClientConfig>, addr: SocketAddr) -> Result<ConnInfo, String> {
    tokio::time::timeout(STEP_TIMEOUT, ping_inner(config, addr))
        .await
        .unwrap_or_else(|_| Err("client timed out".into()))
}

async fn ping_inner(config: Arc<ClientConfig>, addr: SocketAddr) -> Result<ConnInfo, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    let name = ServerName::try_from(SERVER_NAME).map_err(|e| format!("server name: {e}"))?;
    let mut tls = TlsConnector::from(config).connect(name, tcp).await.map_err(|e| format!("client handshake: {e}"))?;
    let info = conn_info(tls.get_ref().1);
    tls.write_all(b"ping").await.map_err(|e| format!("client write: {e}"))?;
    let mut buf = [0u8; 4];
    // In TLS 1.3 the server checks the client certificate after the client considers the handshake done, so a
    // rejection only shows up here.
    tls.read_exact(&mut buf).await.map_err(|e| format!("client read: {e}"))?;
    if &buf != b"pong" {
        return Err(format!("client got {buf:?}"));
    }
    Ok(info)
}

/// One mutual-TLS scenario: any two vault keys, one protocol version, `handshakes` full handshakes.
pub struct MtlsCase {
    /// Protocol version both sides are limited to.
    pub version: &'static SupportedProtocolVersion,
    /// The server's key (any backend).
    pub server_key: SharedKey,
    /// The client's key (any backend).
    pub client_key: SharedKey,
    /// Number of sequential full handshakes.
    pub handshakes: usize,
}

/// The signature algorithms each side's key was asked for, one entry per signature.
#[derive(Debug)]
pub struct MtlsReport {
    /// Server-side signatures.
    pub server_algs: Vec<SignAlg>,
    /// Client-side signatures.
    pub client_algs: Vec<SignAlg>,
}

/// Runs `case` against a fresh server from `pki` and checks, per handshake: the ping/pong, the negotiated version,
/// a full handshake, both peers' certificate chains, and exactly one signature per side.
pub async fn run_mtls(pki: &TestPki, case: MtlsCase) -> MtlsReport {
    let server_key = CountingKey::new(case.server_key);
    let client_key = CountingKey::new(case.client_key);
    let server_chain = pki.issue(&server_key.shared(), "server");
    let client_chain = pki.issue(&client_key.shared(), "client");
    let server_resolver =
        Arc::new(SwappableCertifiedKey::new(server_chain.clone(), server_key.shared()).expect("pair"));
    let client_resolver =
        Arc::new(SwappableCertifiedKey::new(client_chain.clone(), client_key.shared()).expect("pair"));
    let (scfg, ccfg) = mtls_configs(pki, server_resolver, client_resolver, case.version);
    let mut server = TestServer::start(scfg).await;

    for n in 1..=case.handshakes {
        let client = ping(ccfg.clone(), server.addr).await.expect("client side of the handshake");
        let served = server.next_outcome().await.expect("server side of the handshake");
        assert_eq!(client.version, case.version.version);
        assert_eq!(served.version, case.version.version);
        assert_eq!(client.kind, HandshakeKind::Full);
        assert_eq!(served.kind, HandshakeKind::Full);
        assert_eq!(client.peer_certs, server_chain, "client sees the server's chain");
        assert_eq!(served.peer_certs, client_chain, "server sees the client's chain");
        assert_eq!(server_key.count(), n, "one server signature per full handshake");
        assert_eq!(client_key.count(), n, "one client signature per full handshake");
    }
    MtlsReport { server_algs: server_key.algs(), client_algs: client_key.algs() }
}
