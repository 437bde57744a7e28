//! Helpers of certvault's end-to-end and interop tests: a real vaultd per test, application certificates made at run
//! time, PKI directories for the async-opcua peer, and the result matrix the interop tests print.
//!
//! Every key and certificate is generated at run time into temporary directories; every spawned process is killed
//! when its handle drops.
#![forbid(unsafe_code)]

pub mod client;
pub mod machine;
pub mod proxy;

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Once};
use std::time::Duration;

use base64::Engine as _;
use certvault::container::{Container, KdfParams};
use certvault::csr::{self, CsrRequest};
use certvault::soft::{generate_pkcs8, SoftKey};
use certvault::{DaemonClient, KeyAlgorithm, KeyPolicy, KeySelector, KeyStore, SharedKey};
use certvault_opcua::channel::asymmetric::{open_open, seal_open, LocalIdentity, PeerCertificate};
use certvault_opcua::channel::chunk::SequenceHeader;
use certvault_opcua::channel::keys::ChannelKeys;
use certvault_opcua::channel::policy::{DeprecatedPolicies, SecurityMode, SecurityPolicy};
use certvault_opcua::channel::symmetric::SymmetricSealer;
use certvault_opcua::pki::PkiStore;
use certvault_opcua::server::{Server, ServerBuilder};
use certvault_opcua::service::BodyCodec;
use certvault_opcua::transport::uacp::{
    ChunkType, ErrorMessage, FrameDecoder, Limits, MessageType, Negotiated, UacpMessage,
};
use opcua_types::{
    ByteString, DateTime, NodeId, ObjectId, OpenSecureChannelRequest, OpenSecureChannelResponse, RequestHeader,
    SecurityTokenRequestType, StatusCode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
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
    /// Makes a container and starts `exe` on it (integration tests pass `env!("CARGO_BIN_EXE_tests-vaultd")`, the daemon
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

    /// The daemon's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A `vaultd:` key URI for the key labelled `label`, with the PIN in a file of the daemon's directory.
    pub fn key_uri(&self, label: &str) -> String {
        let pin = self.dir.path().join("pin");
        std::fs::write(&pin, PIN).expect("pin file");
        format!("vaultd:object={label}?socket={}&pin-source=file:{}", self.socket.display(), pin.display())
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
    certvault::daemon::launch::start_vaultd(
        Path::new(exe),
        &["--container".as_ref(), container.as_os_str()],
        socket,
        Duration::from_secs(20),
    )
    .unwrap_or_else(|e| panic!("{e}"))
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

    /// An async-opcua client builder with this PKI as its identity, trusting any server (our tests decide trust on
    /// our side) and without session retries (a refused case must fail at once).
    pub fn client_builder(&self, name: &str, application_uri: &str, product_uri: &str) -> opcua::client::ClientBuilder {
        opcua::client::ClientBuilder::new()
            .application_name(name)
            .application_uri(application_uri)
            .product_uri(product_uri)
            .pki_dir(self.path())
            .certificate_path(self.path().join("own/cert.der"))
            .private_key_path(self.path().join("private/private.pem"))
            .create_sample_keypair(false)
            .trust_server_certs(true)
            .session_retry_limit(0)
    }

    /// An async-opcua server builder with this PKI as its identity, trusting any client, on 127.0.0.1:`port`.
    pub fn server_builder(
        &self,
        name: &str,
        application_uri: &str,
        product_uri: &str,
        port: u16,
    ) -> opcua::server::ServerBuilder {
        opcua::server::ServerBuilder::new()
            .application_name(name)
            .application_uri(application_uri)
            .product_uri(product_uri)
            .pki_dir(self.path())
            .certificate_path(self.path().join("own/cert.der"))
            .private_key_path(self.path().join("private/private.pem"))
            .create_sample_keypair(false)
            .trust_client_certs(true)
            .host("127.0.0.1")
            .port(port)
            .discovery_urls(vec!["/".to_owned()])
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

/// The ApplicationUri of the servers the negative tests start.
pub const TEST_SERVER_URI: &str = "urn:certvault:test:server";

/// A server whose client certificates are judged by a PKI store in a temporary directory, and a client identity
/// that store trusts (the well-behaved client that must keep getting through).
pub struct PkiServer {
    /// The running server.
    pub server: Server,
    /// Its certificate (DER).
    pub certificate: Vec<u8>,
    /// Its PKI store.
    pub pki: Arc<PkiStore>,
    /// A client identity in the store's trusted/certs.
    pub good_client: LocalIdentity,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for PkiServer {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl PkiServer {
    /// Starts a server on 127.0.0.1 offering None and every secured policy x mode, with `limits`.
    pub async fn start(limits: Limits) -> PkiServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Arc::new(PkiStore::create_or_open(dir.path().join("pki")).expect("pki store"));
        let good_client = identity(soft_key(2048, "good"), "good", "urn:certvault:test:good");
        pki.trust(good_client.certificate()).expect("trust the good client");
        let key = soft_key(2048, "server");
        let certificate = self_signed(&key, "server", TEST_SERVER_URI);
        let server = ServerBuilder::new("opc.tcp://127.0.0.1:0/")
            .application_uri(TEST_SERVER_URI)
            .identity(key, certificate.clone())
            .expect("identity")
            .secure_endpoints()
            .allow_security_none()
            .pki(pki.clone())
            .limits(limits)
            .hello_timeout(Duration::from_millis(300))
            .start()
            .await
            .expect("server");
        PkiServer { server, certificate, pki, good_client, _dir: dir }
    }

    /// Files in the store's rejected/certs.
    pub fn rejected_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.pki.rejected_certs_dir())
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
    }

    /// Connects the trusted client over Basic256Sha256/SignAndEncrypt and calls GetEndpoints: the server still
    /// serves well-behaved clients.
    pub async fn assert_still_serving(&self) {
        self.connect(self.good_client.clone()).await.expect("a well-behaved client still connects");
    }

    /// Connects `identity` over Basic256Sha256/SignAndEncrypt, calls GetEndpoints and closes.
    pub async fn connect(&self, identity: LocalIdentity) -> certvault_opcua::Result<()> {
        let client = tokio::time::timeout(
            STEP_TIMEOUT,
            certvault_opcua::client::connect(
                self.server.endpoint_url(),
                SecurityPolicy::Basic256Sha256,
                SecurityMode::SignAndEncrypt,
                Some(identity),
                Some(&self.certificate),
            ),
        )
        .await
        .expect("connect in time")?;
        assert_eq!(client.get_endpoints().await?.len(), 7);
        client.close().await
    }
}

/// A TCP connection to `server` with Nagle off.
pub async fn raw_connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.local_addr()).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// Sends a Hello for the server's endpoint URL with `limits` and returns the negotiated limits.
pub async fn raw_hello(stream: &mut TcpStream, server: &Server, limits: Limits) -> Negotiated {
    let hello = limits.hello(server.endpoint_url()).expect("hello");
    stream.write_all(&hello.encode().expect("encode")).await.expect("write");
    let frame = read_frame(stream).await.expect("Acknowledge");
    let UacpMessage::Acknowledge(ack) = UacpMessage::decode(&frame).expect("ack") else {
        panic!("expected Acknowledge")
    };
    limits.accept_acknowledge(&hello, &ack).expect("limits")
}

/// Reads one whole frame; `None` when the peer closed first.
pub async fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut header = [0u8; 8];
    tokio::time::timeout(STEP_TIMEOUT, stream.read_exact(&mut header)).await.expect("read in time").ok()?;
    let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let mut frame = header.to_vec();
    frame.resize(size.max(8), 0);
    tokio::time::timeout(STEP_TIMEOUT, stream.read_exact(&mut frame[8..])).await.expect("read in time").ok()?;
    Some(frame)
}

/// Reads until the server closes, and returns every frame it sent.
pub async fn frames_until_close(stream: &mut TcpStream) -> Vec<Vec<u8>> {
    let mut decoder = FrameDecoder::new(1 << 20);
    let mut buf = vec![0u8; 65536];
    let mut frames = Vec::new();
    loop {
        let n = tokio::time::timeout(STEP_TIMEOUT, stream.read(&mut buf))
            .await
            .expect("the server closes in time")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        decoder.push(&buf[..n]);
        while let Ok(Some(frame)) = decoder.next_frame() {
            frames.push(frame.bytes);
        }
    }
    frames
}

/// Asserts that the server's last frame before closing the socket is an Error message with `status`.
pub async fn expect_error_and_close(stream: &mut TcpStream, status: StatusCode) {
    let frames = frames_until_close(stream).await;
    let last = frames.last().expect("an Error message before the close");
    match UacpMessage::decode(last) {
        Ok(UacpMessage::Error(ErrorMessage { error, .. })) => assert_eq!(error, status),
        other => panic!("expected an Error message with {status}, got {other:?}"),
    }
}

/// A client secure channel built from the crate's public sans-IO pieces instead of [`SecureChannel`], so a test
/// knows the nonces and keys and can send what a correct client never would (bad padding, too many chunks, a renew
/// signed by another certificate).
pub struct HandChannel {
    /// The socket.
    pub stream: TcpStream,
    /// What Hello/Acknowledge agreed on.
    pub negotiated: Negotiated,
    /// The policy.
    pub policy: SecurityPolicy,
    /// The mode.
    pub mode: SecurityMode,
    /// The server-assigned channel id.
    pub channel_id: u32,
    /// The current token id.
    pub token_id: u32,
    /// The derived symmetric keys (client and server direction).
    pub keys: ChannelKeys,
    /// The server's certificate.
    pub server: PeerCertificate,
    next_sequence: u32,
    next_request: u32,
}

impl HandChannel {
    /// Connects, says Hello and opens a channel (Issue) as `identity`.
    pub async fn open(
        server: &Server,
        server_certificate: &[u8],
        policy: SecurityPolicy,
        mode: SecurityMode,
        identity: &LocalIdentity,
    ) -> HandChannel {
        let mut stream = raw_connect(server).await;
        let negotiated = raw_hello(&mut stream, server, Limits::default()).await;
        let peer = PeerCertificate::from_der(server_certificate).expect("server certificate");
        let mut channel = HandChannel {
            stream,
            negotiated,
            policy,
            mode,
            channel_id: 0,
            token_id: 0,
            keys: ChannelKeys::derive(policy, &[0; 32], &[0; 32]).expect("placeholder keys"),
            server: peer,
            next_sequence: 1,
            next_request: 1,
        };
        let client_nonce = channel.send_open(identity, SecurityTokenRequestType::Issue).await;
        let frame = read_frame(&mut channel.stream).await.expect("OpenSecureChannel response");
        let opened = open_open(&frame, Some(identity), DeprecatedPolicies::Reject).expect("OPN response opens");
        let codec = BodyCodec::new();
        let (id, at) = codec.peek_id(&opened.body).expect("body type");
        assert_eq!(id, ObjectId::OpenSecureChannelResponse_Encoding_DefaultBinary);
        let response: OpenSecureChannelResponse = codec.decode_at(&opened.body, at).expect("OpenSecureChannelResponse");
        channel.channel_id = response.security_token.channel_id;
        channel.token_id = response.security_token.token_id;
        let server_nonce = response.server_nonce.value.unwrap_or_default();
        channel.keys = ChannelKeys::derive(policy, &client_nonce, &server_nonce).expect("keys");
        channel
    }

    /// The next sequence number (and consumes it).
    pub fn next_sequence(&mut self) -> u32 {
        let n = self.next_sequence;
        self.next_sequence += 1;
        n
    }

    /// The next request id (and consumes it).
    pub fn next_request(&mut self) -> u32 {
        let n = self.next_request;
        self.next_request += 1;
        n
    }

    /// Sends an OpenSecureChannel request of `kind` signed by `identity`; returns the client nonce.
    pub async fn send_open(&mut self, identity: &LocalIdentity, kind: SecurityTokenRequestType) -> Vec<u8> {
        let chunk = self.open_chunk(identity, kind, &self.server.clone());
        self.stream.write_all(&chunk.1).await.expect("write OPN");
        chunk.0
    }

    /// Builds an OpenSecureChannel chunk of `kind` signed by `identity` and encrypted to `receiver`; returns the
    /// client nonce and the chunk.
    pub fn open_chunk(
        &mut self,
        identity: &LocalIdentity,
        kind: SecurityTokenRequestType,
        receiver: &PeerCertificate,
    ) -> (Vec<u8>, Vec<u8>) {
        let nonce: Vec<u8> = (0..self.policy.nonce_len()).map(|i| (i as u8).wrapping_mul(37) ^ 0x5a).collect();
        let request_id = self.next_request();
        let request = OpenSecureChannelRequest {
            request_header: RequestHeader::new(&NodeId::null(), &DateTime::now(), request_id),
            client_protocol_version: 0,
            request_type: kind,
            security_mode: self.mode.to_wire(),
            client_nonce: ByteString::from(nonce.clone()),
            requested_lifetime: 60_000,
        };
        let body = BodyCodec::new()
            .encode(ObjectId::OpenSecureChannelRequest_Encoding_DefaultBinary, &request)
            .expect("encode OPN request");
        let sequence = SequenceHeader { sequence_number: self.next_sequence(), request_id };
        let chunk = seal_open(
            self.policy,
            Some(identity),
            Some(receiver),
            self.channel_id,
            sequence,
            &body,
            self.negotiated.send_buffer_size as usize,
        )
        .expect("seal OPN");
        (nonce, chunk)
    }

    /// A correctly secured MSG chunk of `chunk_type` carrying `body`, for request `request_id`.
    pub fn msg_chunk(&mut self, chunk_type: ChunkType, request_id: u32, body: &[u8]) -> Vec<u8> {
        let sealer = SymmetricSealer::new(self.policy, self.mode, &self.keys.client).expect("sealer");
        let sequence = SequenceHeader { sequence_number: self.next_sequence(), request_id };
        sealer.seal(MessageType::Message, chunk_type, self.channel_id, self.token_id, sequence, body).expect("seal MSG")
    }
}

/// A fresh SoftHSM2 token for one test binary, its directory removed when dropped (also when the test fails).
pub struct SoftHsmToken {
    dir: PathBuf,
    /// The token, logged in with the user PIN.
    pub token: Arc<certvault::pkcs11::Pkcs11Token>,
}

impl SoftHsmToken {
    /// Makes a token labelled `label` (user PIN 123456) in a temporary directory and points `SOFTHSM2_CONF` at it:
    /// the module reads that variable once per process, so a test binary has one token user. `None` (with a
    /// SKIPPED line) when SoftHSM2 is not installed, unless `CERTVAULT_REQUIRE_SOFTHSM` demands it.
    pub fn create(label: &str) -> Option<SoftHsmToken> {
        use certvault::pkcs11::{softhsm, Pkcs11Token};
        if !softhsm::available() {
            assert!(std::env::var_os("CERTVAULT_REQUIRE_SOFTHSM").is_none(), "CERTVAULT_REQUIRE_SOFTHSM: no SoftHSM2");
            eprintln!("SKIPPED: SoftHSM2 is not installed");
            return None;
        }
        let dir = tempfile::Builder::new().prefix("softhsm-").tempdir().expect("tempdir").keep();
        let conf = softhsm::write_config(&dir).expect("softhsm2.conf");
        std::env::set_var("SOFTHSM2_CONF", &conf);
        softhsm::init_token(&conf, label, "123456", "12345678").expect("init token");
        let token = Pkcs11Token::open(Path::new(softhsm::MODULE), label, Some(b"123456")).expect("token");
        Some(SoftHsmToken { dir, token: Arc::new(token) })
    }
}

impl Drop for SoftHsmToken {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A server builder from a TOML configuration file, as machine-a makes it (opening the vault key off the runtime).
pub async fn server_from_config(path: &Path) -> ServerBuilder {
    let config = certvault_opcua::server::config::ConfigFile::load(path).expect("config parses");
    tokio::task::spawn_blocking(move || config.builder()).await.expect("join").expect("builder")
}
