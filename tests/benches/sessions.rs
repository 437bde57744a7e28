//! Session benchmark (issue 4), one run, one binary, Basic256Sha256 + SignAndEncrypt, RSA-2048 everywhere:
//!
//! 1. a server process (pinned with `taskset` to CPU 0) runs two servers on one single-worker tokio runtime: ours
//!    (`MachineServer`, its key in a real vaultd started by that process) and async-opcua 0.19's (its key a PEM
//!    file), both with a Double `Setpoint` and a 1 MiB ByteString `Blob`;
//! 2. this process (CPU 1, single-worker runtime) runs our client (its key in a second vaultd) and async-opcua's
//!    client against both servers, so all four client -> server pairs are measured in one run, interleaved:
//!    full connects (connect .. ActivateSession, one Read, CloseSession, close), sequential Reads on one session,
//!    16 concurrent Reads on one session, and 1 MiB ByteString Reads;
//! 3. the single-core HMAC-SHA256 + AES-256-CBC limit over the same 1 MiB (the crate's `SymmetricSealer` /
//!    `SymmetricOpener`, as in `secure_channel.rs`);
//! 4. with `CERTVAULT_BENCH_SWTPM=1`: our server with its key on a tpm2-pkcs11 token backed by swtpm (set up by
//!    `scripts/swtpm-token`, run at nice 19 on the client CPU: it stands in for a chip), the token's sign/decrypt
//!    rate, and the Read p99 of an established session alone and while 8 tasks connect in a loop (on a runtime of
//!    their own at nice 19, so the load generator does not delay the measured client on the shared CPU);
//! 5. a Markdown report on stdout with the ratios against the targets. Progress goes to stderr.
//!
//! Environment: `SESSBENCH_CONNECTS` (connects per pair, default 100), `SESSBENCH_QUICK=1` (short phases),
//! `SESSBENCH_PIN=0` (no pinning), `CERTVAULT_BENCH_SWTPM=1`, `SESSBENCH_PROFILE=<seconds>` (only our pair's
//! sequential Reads, for a profiler). Without the `--bench` argument (`cargo test --benches`) it is a smoke run. Every child process is stopped by a drop guard, also on panic. Nothing here
//! asserts on a time: the targets are printed as met or missed.
#![forbid(unsafe_code)]

mod common;
use common::*;

use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use base64::Engine as _;
use certvault::SharedKey;
use certvault_opcua::channel::asymmetric::LocalIdentity;
use certvault_opcua::channel::chunk::SequenceHeader;
use certvault_opcua::channel::keys::ChannelKeys;
use certvault_opcua::channel::policy::{SecurityMode, SecurityPolicy};
use certvault_opcua::channel::symmetric::{SymmetricOpener, SymmetricSealer};
use certvault_opcua::client::{ClientOptions, Session, SessionOptions};
use certvault_opcua::transport::uacp::{ChunkType, Limits, MessageType};
use certvault_tests::machine::MachineServer;
use certvault_tests::{identity, PeerPki, Vaultd, STEP_TIMEOUT};
use opcua::client::IdentityToken;
use opcua::server::address_space::VariableBuilder;
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::memory::{simple_node_manager, SimpleNodeManager};
use opcua::server::{ServerEndpoint, ServerHandle, ANONYMOUS_USER_TOKEN_ID};
use opcua::types::{
    ByteString, DataTypeId, DecodingOptions, EndpointDescription, NodeId, QualifiedName, ReadValueId,
    TimestampsToReturn, Variant,
};
use tokio::net::TcpListener;

const POLICY: SecurityPolicy = SecurityPolicy::Basic256Sha256;
const MODE: SecurityMode = SecurityMode::SignAndEncrypt;
const PEER_SERVER_URI: &str = "urn:async-opcua:sessbench:server";
const OUR_CLIENT_URI: &str = "urn:certvault:sessbench:client";
const PEER_CLIENT_URI: &str = "urn:async-opcua:sessbench:client";
const PEER_NS: &str = "urn:certvault:sessbench:peer";
const SERVER_CPU: &str = "0";
const CLIENT_CPU: &str = "1";
const ROLE_ENV: &str = "SESSBENCH_ROLE";
const PINNED_ENV: &str = "SESSBENCH_PINNED";
const SWTPM_ENV: &str = "CERTVAULT_BENCH_SWTPM";
/// The ByteString read for throughput: 1 MiB.
const BLOB: usize = 1 << 20;
/// Requests outstanding at once in the concurrent phase.
const CONCURRENCY: usize = 16;
/// Connecting tasks that load the vault in the swtpm phase.
const LOADERS: usize = 8;
/// Discarded connects per pair before measuring.
const WARMUP_CONNECTS: usize = 3;
/// Transport and decoding limits that let every client and server carry a 1 MiB ByteString.
const BIG_MESSAGE: usize = 4 << 20;
const BIG_CHUNKS: usize = 256;
const BIG_BYTE_STRING: usize = 2 << 20;

fn main() -> Result<()> {
    if std::env::var(ROLE_ENV).as_deref() == Ok("server") {
        server_main()
    } else {
        client_main()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Server process

/// What the server process prints on its READY line, and what the clients need.
#[derive(Clone, Debug)]
struct Target {
    url: String,
    certificate: Vec<u8>,
    setpoint: NodeId,
    blob: NodeId,
}

fn encode_target(t: &Target) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(&t.certificate);
    format!("{} {} {} {}", t.url, b64, t.setpoint.namespace, t.blob.namespace)
}

fn decode_target<'a>(parts: &mut impl Iterator<Item = &'a str>) -> Result<Target> {
    let url = parts.next().context("url")?.to_owned();
    let certificate = base64::engine::general_purpose::STANDARD.decode(parts.next().context("certificate")?)?;
    let ns: u16 = parts.next().context("namespace")?.parse()?;
    let blob_ns: u16 = parts.next().context("namespace")?.parse()?;
    Ok(Target { url, certificate, setpoint: NodeId::new(ns, "Setpoint"), blob: NodeId::new(blob_ns, "Blob") })
}

/// The async-opcua server: one Basic256Sha256 + SignAndEncrypt endpoint, anonymous users, `Setpoint` and `Blob`.
struct PeerServer {
    handle: ServerHandle,
    task: tokio::task::JoinHandle<()>,
    _pki: PeerPki,
    target: Target,
}

impl PeerServer {
    async fn start() -> Result<PeerServer> {
        let pki = PeerPki::new("async-opcua sessbench server", PEER_SERVER_URI);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let tokens = [ANONYMOUS_USER_TOKEN_ID.to_owned()];
        let (server, handle) = pki
            .server_builder("async-opcua sessbench server", PEER_SERVER_URI, "urn:async-opcua:sessbench", port)
            .max_message_size(BIG_MESSAGE)
            .max_chunk_count(BIG_CHUNKS)
            .max_byte_string_length(BIG_BYTE_STRING)
            .add_endpoint("e", ServerEndpoint::new("/", peer_policy(), MODE.to_wire(), &tokens))
            .with_node_manager(simple_node_manager(
                NamespaceMetadata { namespace_uri: PEER_NS.to_owned(), ..Default::default() },
                "sessbench",
            ))
            .build()
            .map_err(|e| anyhow!("async-opcua server: {e}"))?;
        let ns = handle.get_namespace_index(PEER_NS).context("namespace")?;
        let manager = handle.node_managers().get_of_type::<SimpleNodeManager>().context("simple node manager")?;
        {
            let mut space = manager.address_space().write();
            let folder = NodeId::new(ns, "Machine");
            space.add_folder(&folder, QualifiedName::new(ns, "Machine"), "Machine", &NodeId::objects_folder_id());
            VariableBuilder::new(&NodeId::new(ns, "Setpoint"), QualifiedName::new(ns, "Setpoint"), "Setpoint")
                .data_type(DataTypeId::Double)
                .value(0.0f64)
                .organized_by(&folder)
                .insert(&mut *space);
            VariableBuilder::new(&NodeId::new(ns, "Blob"), QualifiedName::new(ns, "Blob"), "Blob")
                .data_type(DataTypeId::ByteString)
                .value(ByteString::from(blob_bytes()))
                .organized_by(&folder)
                .insert(&mut *space);
        }
        let task = tokio::spawn(async move {
            let _ = server.run_with(listener).await;
        });
        let target = Target {
            url: format!("opc.tcp://127.0.0.1:{port}/"),
            certificate: pki.certificate.clone(),
            setpoint: NodeId::new(ns, "Setpoint"),
            blob: NodeId::new(ns, "Blob"),
        };
        Ok(PeerServer { handle, task, _pki: pki, target })
    }
}

fn peer_policy() -> opcua::crypto::SecurityPolicy {
    opcua::crypto::SecurityPolicy::from_uri(POLICY.uri())
}

/// The Blob's content on both servers (the machine server's pattern).
fn blob_bytes() -> Vec<u8> {
    (0..BLOB).map(|i| (i % 256) as u8).collect()
}

/// Where the server process gets our server's key: a fresh vaultd, or the swtpm token named by the
/// `SESSBENCH_PKCS11_*` variables. For the token, also its sign and decrypt rates, measured here before serving
/// (swtpm serves one connection at a time, and this process holds it from now on).
fn server_key(vaultd: &Vaultd) -> Result<(SharedKey, Option<(f64, f64)>)> {
    let Ok(module) = std::env::var("SESSBENCH_PKCS11_MODULE") else {
        return Ok((vaultd.generate_rsa("machine-server", 2048), None));
    };
    let var = |k: &str| std::env::var(k).with_context(|| k.to_owned());
    let (label, pin, key_label) =
        (var("SESSBENCH_PKCS11_TOKEN")?, var("SESSBENCH_PKCS11_PIN")?, var("SESSBENCH_PKCS11_KEY")?);
    let token = certvault::pkcs11::Pkcs11Token::open(module.as_ref(), &label, Some(pin.as_bytes()))
        .map_err(|e| anyhow!("open the PKCS#11 token {label:?}: {e}"))?;
    let key = certvault::KeyStore::key(&token, &certvault::KeySelector::Label(key_label))
        .map_err(|e| anyhow!("the key on the PKCS#11 token: {e}"))?;
    let secs: u64 = var("SESSBENCH_TOKEN_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let rates = token_rates(key.as_ref(), Duration::from_secs(secs))?;
    Ok((key, Some(rates)))
}

/// Signatures and decryptions per second of `key`, one at a time, as the channel uses them (RSA-PKCS#1 v1.5
/// SHA-256 signatures, RSA-OAEP SHA-1 decryptions for Basic256Sha256).
fn token_rates(key: &dyn certvault::VaultKey, budget: Duration) -> Result<(f64, f64)> {
    use certvault::{DecryptAlg, PublicKey, SignAlg};
    let msg = [7u8; 64];
    let (mut n, start) = (0usize, Instant::now());
    while n < 3 || start.elapsed() < budget {
        black_box(key.sign(SignAlg::RsaPkcs1Sha256, &msg).map_err(|e| anyhow!("sign: {e}"))?);
        n += 1;
    }
    let sign = n as f64 / start.elapsed().as_secs_f64();
    let public = PublicKey::from_spki(&key.info().spki_der).map_err(|e| anyhow!("spki: {e}"))?;
    let ciphertext = public.encrypt(DecryptAlg::RsaOaepSha1, &[9u8; 32]).map_err(|e| anyhow!("encrypt: {e}"))?;
    let (mut n, start) = (0usize, Instant::now());
    while n < 3 || start.elapsed() < budget {
        let plain = key.decrypt(DecryptAlg::RsaOaepSha1, &ciphertext).map_err(|e| anyhow!("decrypt: {e}"))?;
        ensure!(plain.as_slice() == [9u8; 32], "decrypt returned other bytes");
        n += 1;
    }
    Ok((sign, n as f64 / start.elapsed().as_secs_f64()))
}

/// Both servers; prints `READY <ours> <peer> <cpus>` and serves until stdin closes.
fn server_main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let vaultd = Vaultd::start(env!("CARGO_BIN_EXE_tests-vaultd"));
    let (key, rates) = server_key(&vaultd)?;
    let ours = rt.block_on(MachineServer::start_with_key(&vaultd, key, BLOB, |b| b.accept_any_certificate()));
    let peer = rt.block_on(PeerServer::start())?;
    let our_target = Target {
        url: ours.endpoint_url().to_owned(),
        certificate: ours.certificate.clone(),
        setpoint: ours.nodes.setpoint.clone(),
        blob: ours.nodes.blob.clone(),
    };
    let mut out = std::io::stdout().lock();
    let (sign, decrypt) = rates.unwrap_or_default();
    writeln!(
        out,
        "READY {} {} {} {sign:.1} {decrypt:.1}",
        encode_target(&our_target),
        encode_target(&peer.target),
        cpus_allowed()
    )?;
    out.flush()?;
    drop(out);
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    peer.handle.cancel();
    rt.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(5), peer.task).await;
        ours.server.shutdown_handle().shutdown();
        drop(ours);
    });
    drop(vaultd);
    Ok(())
}

/// The server child process: closing its stdin asks it to stop; killed if it does not.
struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    ours: Target,
    peer: Target,
    cpus: String,
    /// The token key's signatures/s and decryptions/s, when the server's key is on a token.
    token_rates: (f64, f64),
}

impl ServerProcess {
    fn spawn(pinned: bool, envs: &[(String, String)]) -> Result<ServerProcess> {
        let exe = std::env::current_exe()?;
        let mut cmd = if pinned {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(SERVER_CPU).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd
            .env(ROLE_ENV, "server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawn the server process")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("server stdout")?;
        let placeholder =
            Target { url: String::new(), certificate: Vec::new(), setpoint: NodeId::null(), blob: NodeId::null() };
        let mut guard = ServerProcess {
            child,
            stdin,
            ours: placeholder.clone(),
            peer: placeholder,
            cpus: String::new(),
            token_rates: (0.0, 0.0),
        };
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).context("read the server's READY line")?;
        let mut parts = line.split_whitespace();
        ensure!(parts.next() == Some("READY"), "server said {line:?}");
        guard.ours = decode_target(&mut parts)?;
        guard.peer = decode_target(&mut parts)?;
        guard.cpus = parts.next().unwrap_or("?").to_owned();
        let mut rate = || parts.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        guard.token_rates = (rate(), rate());
        Ok(guard)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Clients

/// A client -> server pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pair {
    Ours,
    Peer,
    OursToPeer,
    PeerToOurs,
}

impl Pair {
    const ALL: [Pair; 4] = [Pair::Ours, Pair::Peer, Pair::OursToPeer, Pair::PeerToOurs];

    fn name(self) -> &'static str {
        match self {
            Pair::Ours => "certvault -> certvault",
            Pair::Peer => "async-opcua -> async-opcua",
            Pair::OursToPeer => "certvault -> async-opcua",
            Pair::PeerToOurs => "async-opcua -> certvault",
        }
    }

    fn our_client(self) -> bool {
        matches!(self, Pair::Ours | Pair::OursToPeer)
    }

    fn our_server(self) -> bool {
        matches!(self, Pair::Ours | Pair::PeerToOurs)
    }
}

/// Both clients, configured once.
struct Clients {
    our_identity: LocalIdentity,
    peer: opcua::client::Client,
    _peer_pki: PeerPki,
    /// The endpoint description of each server as async-opcua's client uses it (fetched once, untimed).
    our_endpoint: EndpointDescription,
    peer_endpoint: EndpointDescription,
}

impl Clients {
    async fn new(our_identity: LocalIdentity, servers: &ServerProcess) -> Result<Clients> {
        let pki = PeerPki::new("async-opcua sessbench client", PEER_CLIENT_URI);
        let peer = pki
            .client_builder("async-opcua sessbench client", PEER_CLIENT_URI, "urn:async-opcua:sessbench")
            .max_message_size(BIG_MESSAGE)
            .max_chunk_count(BIG_CHUNKS)
            .max_byte_string_length(BIG_BYTE_STRING)
            .client()
            .map_err(|e| anyhow!("async-opcua client: {e:?}"))?;
        let our_endpoint = endpoint_of(&peer, &servers.ours).await?;
        let peer_endpoint = endpoint_of(&peer, &servers.peer).await?;
        Ok(Clients { our_identity, peer, _peer_pki: pki, our_endpoint, peer_endpoint })
    }

    fn our_options(&self, server: &Target) -> SessionOptions {
        let mut channel = ClientOptions::new(POLICY, MODE);
        channel.identity = Some(self.our_identity.clone());
        channel.server_certificate = Some(server.certificate.clone());
        let mut options = SessionOptions::new(channel);
        options.application_uri = Some(OUR_CLIENT_URI.into());
        options.decoding = DecodingOptions { max_byte_string_length: BIG_BYTE_STRING, ..DecodingOptions::default() };
        options
    }

    async fn open(&mut self, pair: Pair, servers: &ServerProcess) -> Result<Reader> {
        let target = if pair.our_server() { &servers.ours } else { &servers.peer };
        if pair.our_client() {
            let session = Session::connect(&target.url, self.our_options(target)).await?;
            Ok(Reader::ours(session))
        } else {
            let endpoint = if pair.our_server() { &self.our_endpoint } else { &self.peer_endpoint };
            let (session, event_loop) =
                self.peer.connect_to_endpoint_directly(endpoint.clone(), IdentityToken::Anonymous)?;
            let event_loop = event_loop.spawn();
            ensure!(
                tokio::time::timeout(STEP_TIMEOUT, session.wait_for_connection()).await?,
                "async-opcua: no connection to {}",
                target.url
            );
            Ok(Reader { handle: ReaderHandle::Peer(session), event_loop: Some(event_loop) })
        }
    }
}

/// The endpoint (Basic256Sha256, SignAndEncrypt) from GetEndpoints, as async-opcua's client would pick it.
async fn endpoint_of(client: &opcua::client::Client, server: &Target) -> Result<EndpointDescription> {
    let endpoints = client.get_server_endpoints_from_url(server.url.as_str()).await?;
    endpoints
        .into_iter()
        .find(|e| e.security_policy_uri.as_ref() == POLICY.uri() && e.security_mode == MODE.to_wire())
        .with_context(|| format!("{} offers no Basic256Sha256/SignAndEncrypt endpoint", server.url))
}

/// An established session of either client, with async-opcua's event loop task.
struct Reader {
    handle: ReaderHandle,
    event_loop: Option<tokio::task::JoinHandle<opcua::types::StatusCode>>,
}

impl Reader {
    fn ours(session: Session) -> Reader {
        Reader { handle: ReaderHandle::Ours(Arc::new(session)), event_loop: None }
    }

    async fn read(&self, node: &NodeId) -> Result<usize> {
        self.handle.read(node).await
    }

    fn clone_handle(&self) -> ReaderHandle {
        self.handle.clone()
    }

    async fn close(self) -> Result<()> {
        match self.handle {
            ReaderHandle::Ours(session) => {
                let session = Arc::try_unwrap(session).map_err(|_| anyhow!("session still shared"))?;
                session.close().await?;
            }
            ReaderHandle::Peer(session) => {
                session.disconnect().await?;
                if let Some(event_loop) = self.event_loop {
                    tokio::time::timeout(STEP_TIMEOUT, event_loop)
                        .await
                        .map_err(|_| anyhow!("async-opcua's event loop did not end"))??;
                }
            }
        }
        Ok(())
    }
}

/// A session handle that tasks can share.
#[derive(Clone)]
enum ReaderHandle {
    Ours(Arc<Session>),
    Peer(Arc<opcua::client::Session>),
}

impl ReaderHandle {
    /// Reads `node`'s Value; checks it is a Double (or a ByteString of `BLOB` bytes); returns its size in bytes.
    async fn read(&self, node: &NodeId) -> Result<usize> {
        let value = match self {
            ReaderHandle::Ours(session) => session.read_value(node).await?,
            ReaderHandle::Peer(session) => {
                let mut values =
                    session.read(&[ReadValueId::from(node.clone())], TimestampsToReturn::Neither, 0.0).await?;
                let value = values.pop().context("no DataValue")?;
                ensure!(value.status.is_none_or(|s| s.is_good()), "read status {:?}", value.status);
                value.value.context("no value")?
            }
        };
        match value {
            Variant::Double(_) => Ok(8),
            Variant::ByteString(b) => {
                let len = b.value.as_ref().map_or(0, Vec::len);
                ensure!(len == BLOB, "Blob of {len} bytes");
                Ok(len)
            }
            other => bail!("unexpected value {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Phases

fn target_of(pair: Pair, servers: &ServerProcess) -> &Target {
    if pair.our_server() {
        &servers.ours
    } else {
        &servers.peer
    }
}

/// One full connect: connect .. ActivateSession, one Read of `Setpoint`, CloseSession and close.
async fn connect_once(clients: &mut Clients, pair: Pair, servers: &ServerProcess) -> Result<Duration> {
    let node = target_of(pair, servers).setpoint.clone();
    let start = Instant::now();
    let reader = clients.open(pair, servers).await?;
    reader.read(&node).await?;
    reader.close().await?;
    Ok(start.elapsed())
}

async fn measure_connects(clients: &mut Clients, servers: &ServerProcess, n: usize) -> Result<Vec<Vec<Duration>>> {
    let mut times: Vec<Vec<Duration>> = Pair::ALL.iter().map(|_| Vec::with_capacity(n)).collect();
    for i in 0..WARMUP_CONNECTS + n {
        for k in 0..Pair::ALL.len() {
            let which = (i + k) % Pair::ALL.len();
            let pair = Pair::ALL[which];
            let took = tokio::time::timeout(STEP_TIMEOUT, connect_once(clients, pair, servers))
                .await
                .map_err(|_| anyhow!("{}: connect timed out", pair.name()))?
                .with_context(|| format!("{}: connect", pair.name()))?;
            if i >= WARMUP_CONNECTS {
                times[which].push(took);
            }
        }
        if (i + 1) % 25 == 0 {
            eprintln!("sessbench: {} of {} connect rounds", i + 1, WARMUP_CONNECTS + n);
        }
    }
    Ok(times)
}

/// Totals of one rate phase of one pair.
#[derive(Clone, Debug, Default)]
struct Rate {
    ops: usize,
    bytes: usize,
    elapsed: Duration,
    samples: Vec<Duration>,
}

impl Rate {
    fn per_second(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn mb_per_second(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
}

/// Sequential reads of `node` for `slice`, recording each round trip.
async fn sequential(reader: &Reader, node: &NodeId, slice: Duration, rate: &mut Rate) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < slice {
        let t = Instant::now();
        rate.bytes += reader.read(node).await?;
        rate.samples.push(t.elapsed());
        rate.ops += 1;
    }
    rate.elapsed += start.elapsed();
    Ok(())
}

/// `CONCURRENCY` tasks reading `node` on one session until `slice` has passed.
async fn concurrent(reader: &Reader, node: &NodeId, slice: Duration, rate: &mut Rate) -> Result<()> {
    let start = Instant::now();
    let deadline = start + slice;
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let handle = reader.clone_handle();
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            while Instant::now() < deadline {
                handle.read(&node).await?;
                n += 1;
            }
            Ok::<_, anyhow::Error>(n)
        }));
    }
    for t in tasks {
        rate.ops += t.await??;
    }
    rate.elapsed += start.elapsed();
    Ok(())
}

#[derive(Clone, Copy)]
enum Phase {
    Sequential,
    Concurrent,
    Blob,
}

/// Runs `phase` for every pair in `pairs` in `rounds` rounds of `slice` each, rotating who goes first; one
/// session per pair, opened before (untimed) and kept for all rounds.
async fn measure_rates(
    clients: &mut Clients,
    servers: &ServerProcess,
    pairs: &[Pair],
    phase: Phase,
    rounds: usize,
    slice: Duration,
) -> Result<Vec<Rate>> {
    let mut readers = Vec::new();
    for &pair in pairs {
        let reader = clients.open(pair, servers).await.with_context(|| format!("{}: session", pair.name()))?;
        // Warm-up: a few reads on the fresh session.
        let target = target_of(pair, servers);
        for _ in 0..3 {
            reader.read(&target.setpoint).await?;
        }
        readers.push(reader);
    }
    let mut rates = vec![Rate::default(); pairs.len()];
    for round in 0..rounds {
        for k in 0..pairs.len() {
            let which = (round + k) % pairs.len();
            let pair = pairs[which];
            let target = target_of(pair, servers);
            let reader = &readers[which];
            let rate = &mut rates[which];
            let run = match phase {
                Phase::Sequential => sequential(reader, &target.setpoint, slice, rate).await,
                Phase::Concurrent => concurrent(reader, &target.setpoint, slice, rate).await,
                Phase::Blob => sequential(reader, &target.blob, slice, rate).await,
            };
            run.with_context(|| format!("{}: reads", pair.name()))?;
        }
    }
    for reader in readers {
        reader.close().await?;
    }
    Ok(rates)
}

// ---------------------------------------------------------------------------------------------------------------
// swtpm: the server's key on a tpm2-pkcs11 token

/// The token made by `scripts/swtpm-token`: its module, label, PIN and key label, and the script's process.
struct SwtpmToken {
    child: Child,
    module: String,
    token: String,
    pin: String,
    key: String,
    tcti: String,
    store: String,
}

/// Runs `start` on a background thread (SCHED_IDLE): the processes it starts, and everything they start, inherit
/// that policy (and the nice value).
fn in_background<T: Send>(start: impl FnOnce() -> T + Send) -> Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                certvault_opcua::vault_pool::make_background_thread();
                start()
            })
            .join()
            .map_err(|_| anyhow!("a background start-up thread panicked"))
    })
}

impl SwtpmToken {
    /// Runs `scripts/swtpm-token serve`, which prints `export NAME=value` lines and keeps swtpm running until its
    /// stdin closes. `Err` with the reason when the tools are missing or the set-up fails.
    fn start(pinned: bool) -> Result<SwtpmToken> {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/swtpm-token");
        // swtpm stands in for the TPM chip, whose RSA would not run on the server's CPU: when pinned, it runs on
        // the client CPU, so the server CPU carries only the server's own work (and tpm2-pkcs11's, in its process).
        // And as a background process (SCHED_IDLE, inherited from the thread that starts it, and nice 19): a chip's
        // RSA takes no host CPU, so the emulated one must not take it from the processes measured either. Nice 19
        // alone was not enough: the kernel lets a running nice-19 thread finish its time slice (up to milliseconds)
        // before a woken normal thread gets the CPU, which reached the measured reads' p99; a SCHED_IDLE thread
        // gives the CPU up at once.
        let mut cmd = Command::new("nice");
        cmd.arg("-n").arg("19");
        if pinned {
            cmd.arg("taskset").arg("-c").arg(CLIENT_CPU);
        }
        cmd.arg(&script);
        cmd.arg("serve").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = in_background(|| cmd.spawn())?.with_context(|| format!("run {}", script.display()))?;
        let stdout = child.stdout.take().context("script stdout")?;
        let mut vars = std::collections::HashMap::new();
        let mut failure = None;
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            if line == "READY" {
                break;
            }
            if let Some(why) = line.strip_prefix("UNAVAILABLE ") {
                failure = Some(why.to_owned());
                break;
            }
            if let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
                vars.insert(k.to_owned(), v.trim_matches('\'').to_owned());
            }
        }
        let var = |k: &str| vars.get(k).cloned().with_context(|| format!("{k} from scripts/swtpm-token"));
        let token = match failure {
            Some(why) => Err(anyhow!("{why}")),
            None => Ok(SwtpmToken {
                module: var("TPM2_PKCS11_MODULE")?,
                token: var("TPM2_PKCS11_TOKEN")?,
                pin: var("TPM2_PKCS11_PIN")?,
                key: var("TPM2_PKCS11_KEY")?,
                tcti: var("TPM2_PKCS11_TCTI")?,
                store: var("TPM2_PKCS11_STORE")?,
                child,
            }),
        };
        token
    }

    fn envs(&self) -> Vec<(String, String)> {
        vec![
            ("SESSBENCH_PKCS11_MODULE".into(), self.module.clone()),
            ("SESSBENCH_PKCS11_TOKEN".into(), self.token.clone()),
            ("SESSBENCH_PKCS11_PIN".into(), self.pin.clone()),
            ("SESSBENCH_PKCS11_KEY".into(), self.key.clone()),
            ("TPM2_PKCS11_TCTI".into(), self.tcti.clone()),
            ("TPM2_PKCS11_STORE".into(), self.store.clone()),
        ]
    }
}

impl Drop for SwtpmToken {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct SwtpmRows {
    sign_per_s: f64,
    decrypt_per_s: f64,
    baseline: Vec<Duration>,
    loaded: Vec<Duration>,
    connects_during_load: usize,
    load_secs: f64,
    server_cpus: String,
}

/// Read round trips on one established session of our client to our server for `span`.
async fn read_samples(reader: &Reader, node: &NodeId, span: Duration) -> Result<Vec<Duration>> {
    let mut rate = Rate::default();
    sequential(reader, node, span, &mut rate).await?;
    Ok(rate.samples)
}

async fn measure_swtpm(
    token: &SwtpmToken,
    our_identity: LocalIdentity,
    pinned: bool,
    quick: bool,
) -> Result<SwtpmRows> {
    let mut envs = token.envs();
    envs.push(("SESSBENCH_TOKEN_SECS".into(), if quick { "2" } else { "5" }.into()));
    let servers = ServerProcess::spawn(pinned, &envs)?;
    let (sign_per_s, decrypt_per_s) = servers.token_rates;
    eprintln!("sessbench: token: {sign_per_s:.0} signatures/s, {decrypt_per_s:.0} decryptions/s");
    let mut clients = Clients::new(our_identity, &servers).await?;
    let reader = clients.open(Pair::Ours, &servers).await?;
    let node = servers.ours.setpoint.clone();
    for _ in 0..20 {
        reader.read(&node).await?;
    }
    let span = Duration::from_secs(if quick { 3 } else { 10 });
    let baseline = read_samples(&reader, &node, span).await?;
    // Load: LOADERS tasks connect (and close) in a loop against the same server. They run on a runtime of their own
    // whose threads are background threads (SCHED_IDLE): on this 2-CPU machine they share a CPU with the measured
    // reader, and what is measured is the server's behaviour, not how a load generator on the same CPU delays the
    // reader's client (on a network the connecting clients would be other machines).
    let load_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(certvault_opcua::vault_pool::make_background_thread)
        .enable_all()
        .build()?;
    // The connecting clients' own RSA (signing their OpenSecureChannel and CreateSession, decrypting the server's
    // answer: about 3 private-key operations per connect) runs in their own vaultd at nice 19. In the measured
    // client's vaultd, at normal priority on the measured client's CPU, it took that CPU from the measured reads for
    // about a millisecond at a time: the load generator's cost, not the server's behaviour under load.
    let load_vaultd = in_background(|| Vaultd::start(env!("CARGO_BIN_EXE_tests-vaultd")))?;
    let load_identity = identity(load_vaultd.generate_rsa("load-client", 2048), "sessbench load", OUR_CLIENT_URI);
    let stop = Arc::new(AtomicBool::new(false));
    let connects = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut loaders = Vec::new();
    for _ in 0..LOADERS {
        let mut options = clients.our_options(&servers.ours);
        options.channel.identity = Some(load_identity.clone());
        let (url, node, stop, connects) = (servers.ours.url.clone(), node.clone(), stop.clone(), connects.clone());
        loaders.push(load_rt.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let session = Session::connect(&url, options.clone()).await?;
                session.read_value(&node).await?;
                session.close().await?;
                connects.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    // Let the connectors fill the vault's queue before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = connects.load(Ordering::Relaxed);
    let load_start = Instant::now();
    let loaded = read_samples(&reader, &node, span).await?;
    let load_secs = load_start.elapsed().as_secs_f64();
    let connects_during_load = connects.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        tokio::time::timeout(Duration::from_secs(120), l).await.context("a connecting task did not stop")???;
    }
    load_rt.shutdown_background();
    reader.close().await?;
    Ok(SwtpmRows {
        sign_per_s,
        decrypt_per_s,
        baseline,
        loaded,
        connects_during_load,
        load_secs,
        server_cpus: servers.cpus.clone(),
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Single-core crypto limit (as in secure_channel.rs)

fn symmetric_pair() -> Result<(SymmetricSealer, SymmetricOpener)> {
    let keys = ChannelKeys::derive(POLICY, &random_bytes(32), &random_bytes(32))?;
    Ok((SymmetricSealer::new(POLICY, MODE, &keys.server)?, SymmetricOpener::new(POLICY, MODE, &keys.server)?))
}

struct Limit {
    seal: f64,
    open: f64,
    chunks: usize,
}

impl Limit {
    /// One core sealing then opening every byte.
    fn serial(&self) -> f64 {
        1.0 / (1.0 / self.seal + 1.0 / self.open)
    }
}

/// Seals and opens a 1 MiB message split into chunks as the channel splits it at the default 65,535-byte
/// buffers, on this thread.
fn measure_limit(budget: Duration) -> Result<Limit> {
    let (sealer, opener) = symmetric_pair()?;
    let max_body = sealer.layout().max_body_len(Limits::default().send_buffer_size as usize)?;
    let body = random_bytes(BLOB);
    let pieces: Vec<&[u8]> = body.chunks(max_body).collect();
    let mut sequence = 0u32;
    let seal_all = |sequence: &mut u32| -> Result<Vec<Vec<u8>>> {
        let last = pieces.len() - 1;
        let mut out = Vec::with_capacity(pieces.len());
        for (i, piece) in pieces.iter().enumerate() {
            *sequence = sequence.wrapping_add(1);
            let chunk_type = if i == last { ChunkType::Final } else { ChunkType::Intermediate };
            let header = SequenceHeader { sequence_number: *sequence, request_id: 7 };
            out.push(sealer.seal(MessageType::Message, chunk_type, 1, 1, header, piece)?);
        }
        Ok(out)
    };
    let sealed = seal_all(&mut sequence)?;
    let mut reopened = Vec::with_capacity(BLOB);
    for c in &sealed {
        reopened.extend_from_slice(opener.open(c)?.body());
    }
    ensure!(reopened == body, "seal then open returns the body");
    let (mut n, start) = (0usize, Instant::now());
    while n < 3 || start.elapsed() < budget {
        black_box(seal_all(&mut sequence)?);
        n += 1;
    }
    let seal = (n * BLOB) as f64 / start.elapsed().as_secs_f64() / 1e6;
    let (mut n, start) = (0usize, Instant::now());
    while n < 3 || start.elapsed() < budget {
        for chunk in &sealed {
            black_box(opener.open(chunk)?);
        }
        n += 1;
    }
    let open = (n * BLOB) as f64 / start.elapsed().as_secs_f64() / 1e6;
    Ok(Limit { seal, open, chunks: pieces.len() })
}

// ---------------------------------------------------------------------------------------------------------------
// Machine facts (as in secure_channel.rs)

// ---------------------------------------------------------------------------------------------------------------
// Client process

fn client_main() -> Result<()> {
    let cpus = cpus_online();
    let want_pin = env_flag("SESSBENCH_PIN").as_deref() != Some("0");
    let pinned = env_flag(PINNED_ENV).as_deref() == Some("1");
    if want_pin && !pinned && cpus >= 2 && taskset_available() {
        let exe = std::env::current_exe()?;
        let status = Command::new("taskset")
            .arg("-c")
            .arg(CLIENT_CPU)
            .arg(exe)
            .args(std::env::args_os().skip(1))
            .env(PINNED_ENV, "1")
            .status()
            .context("re-run under taskset")?;
        std::process::exit(status.code().unwrap_or(1));
    }
    let unpinned_reason = unpinned_reason(pinned, want_pin, cpus, "SESSBENCH_PIN=0");
    let test_mode = !std::env::args().any(|a| a == "--bench");
    let quick = test_mode || env_flag("SESSBENCH_QUICK").as_deref() == Some("1");
    let connects: usize = match env_flag("SESSBENCH_CONNECTS") {
        Some(v) => v.parse().context("SESSBENCH_CONNECTS must be a number")?,
        None if test_mode => 3,
        None if quick => 20,
        None => 100,
    };
    ensure!(connects > 0, "SESSBENCH_CONNECTS must be positive");
    let (rounds, slice) = match (test_mode, quick) {
        (true, _) => (1, Duration::from_millis(200)),
        (false, true) => (3, Duration::from_millis(300)),
        // Many short rounds, rotated: the VM's noise comes in bursts of seconds, and short interleaved rounds spread
        // a burst over every pair instead of landing on one.
        (false, false) => (20, Duration::from_millis(250)),
    };
    let swtpm = env_flag(SWTPM_ENV).as_deref() == Some("1");

    let load_before = loadavg();
    let cpu_before = CpuSnapshot::take();
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let client_vaultd = Vaultd::start(env!("CARGO_BIN_EXE_tests-vaultd"));
    let our_identity = identity(client_vaultd.generate_rsa("opcua-client", 2048), "sessbench client", OUR_CLIENT_URI);

    if let Some(secs) = env_flag("SESSBENCH_PROFILE") {
        let secs: u64 = secs.parse().context("SESSBENCH_PROFILE must be a number of seconds")?;
        return profile_sequential(&rt, our_identity, pinned, Duration::from_secs(secs));
    }
    let main = {
        let servers = ServerProcess::spawn(pinned, &[])?;
        eprintln!("sessbench: servers at {} and {} on CPUs {}", servers.ours.url, servers.peer.url, servers.cpus);
        rt.block_on(async {
            let mut clients = Clients::new(our_identity.clone(), &servers).await?;
            let connect_times = measure_connects(&mut clients, &servers, connects).await?;
            eprintln!("sessbench: sequential reads");
            let seq = measure_rates(&mut clients, &servers, &Pair::ALL, Phase::Sequential, rounds, slice).await?;
            eprintln!("sessbench: concurrent reads");
            let conc = measure_rates(&mut clients, &servers, &Pair::ALL, Phase::Concurrent, rounds, slice).await?;
            eprintln!("sessbench: 1 MiB reads");
            let blob = measure_rates(&mut clients, &servers, &Pair::ALL, Phase::Blob, rounds, slice).await?;
            Ok::<_, anyhow::Error>(MainRows { connect_times, seq, conc, blob, server_cpus: servers.cpus.clone() })
        })?
    };
    eprintln!("sessbench: single-core crypto limit");
    let limit = measure_limit(Duration::from_millis(if quick { 500 } else { 2_000 }))?;

    let swtpm_rows = if swtpm {
        match SwtpmToken::start(pinned) {
            Ok(token) => Some(
                rt.block_on(measure_swtpm(&token, our_identity.clone(), pinned, quick)).map_err(|e| format!("{e:#}")),
            ),
            Err(e) => Some(Err(format!("set-up failed or tools missing: {e:#}"))),
        }
    } else {
        None
    };
    drop(rt);
    drop(client_vaultd);
    let others = cpu_before.others_share(&CpuSnapshot::take());

    let report = Report {
        date: date(),
        cpu: cpu_model(),
        cpus,
        pinning: match unpinned_reason {
            None => format!(
                "yes (taskset): both servers and the server's vaultd on CPU {SERVER_CPU}; both clients, the \
                 client vaultd and the crypto limit on CPU {CLIENT_CPU} (Cpus_allowed_list: client {}, server {})",
                cpus_allowed(),
                main.server_cpus
            ),
            Some(why) => format!("no ({why}): every process may run on any CPU"),
        },
        load_before,
        load_after: loadavg(),
        others,
        connects,
        rounds,
        slice,
        mode: match (test_mode, quick) {
            (true, _) => "test mode (no --bench argument: smoke run)",
            (false, true) => "quick (SESSBENCH_QUICK=1)",
            (false, false) => "full",
        },
        elapsed: started.elapsed(),
        main,
        limit,
        swtpm: swtpm_rows,
    };
    report.print();
    Ok(())
}

/// `SESSBENCH_PROFILE=<seconds>`: only sequential Reads of our client on our server, for a profiler attached to
/// the two process ids printed on stderr (`perf record -p <server>,<client>`). No report.
fn profile_sequential(
    rt: &tokio::runtime::Runtime,
    our_identity: LocalIdentity,
    pinned: bool,
    span: Duration,
) -> Result<()> {
    let servers = ServerProcess::spawn(pinned, &[])?;
    rt.block_on(async {
        let mut clients = Clients::new(our_identity, &servers).await?;
        eprintln!("sessbench: profiling: server pid {}, client pid {}", servers.child.id(), std::process::id());
        // A pause to attach the profiler before the reads start.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rates = measure_rates(&mut clients, &servers, &[Pair::Ours], Phase::Sequential, 1, span).await?;
        let per_second = rates.first().map(Rate::per_second).unwrap_or_default();
        eprintln!("sessbench: profiling: {per_second:.0} reads/s");
        Ok(())
    })
}

struct MainRows {
    connect_times: Vec<Vec<Duration>>,
    seq: Vec<Rate>,
    conc: Vec<Rate>,
    blob: Vec<Rate>,
    server_cpus: String,
}

// ---------------------------------------------------------------------------------------------------------------
// Report

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

struct Report {
    date: String,
    cpu: String,
    cpus: usize,
    pinning: String,
    load_before: String,
    load_after: String,
    others: f64,
    connects: usize,
    rounds: usize,
    slice: Duration,
    mode: &'static str,
    elapsed: Duration,
    main: MainRows,
    limit: Limit,
    swtpm: Option<std::result::Result<SwtpmRows, String>>,
}

impl Report {
    fn print(&self) {
        println!("\n## certvault session benchmark\n");
        println!("- date: {}", self.date);
        println!("- CPU: {} ({} CPUs online)", self.cpu, self.cpus);
        println!("- pinning: {}", self.pinning);
        println!("- load average (1/5/15 min) before: {}; after: {}", self.load_before, self.load_after);
        println!(
            "- CPU time of processes outside this benchmark during the run: {:.0} % of the machine ({} CPUs)",
            100.0 * self.others,
            self.cpus
        );
        println!(
            "- mode: {}; {} measured connects per pair after {} warm-up, interleaved; rate phases: {} rounds x {} ms \
             per pair, interleaved; run took {:.0} s",
            self.mode,
            self.connects,
            WARMUP_CONNECTS,
            self.rounds,
            self.slice.as_millis(),
            self.elapsed.as_secs_f64()
        );
        println!(
            "- build: {}",
            if cfg!(debug_assertions) { "debug (figures are not meaningful)" } else { "optimised (bench profile)" }
        );
        println!(
            "- policy: Basic256Sha256, SignAndEncrypt, RSA-2048; anonymous user; certvault keys in vaultd \
             (server and client), async-opcua keys in PEM files; 127.0.0.1"
        );

        let m = &self.main;
        println!(
            "\n### Full connect (TCP .. ActivateSession, one Read of a Double, CloseSession, CloseSecureChannel)\n"
        );
        println!("| client -> server | connects | median ms | p90 ms | min ms |");
        println!("|---|--:|--:|--:|--:|");
        for (i, pair) in Pair::ALL.iter().enumerate() {
            let t = &m.connect_times[i];
            let min = t.iter().min().copied().unwrap_or_default();
            println!(
                "| {} | {} | {:.2} | {:.2} | {:.2} |",
                pair.name(),
                t.len(),
                ms(percentile(t, 50)),
                ms(percentile(t, 90)),
                ms(min)
            );
        }
        let med = |i: usize| ms(percentile(&m.connect_times[i], 50));
        let p90 = |i: usize| ms(percentile(&m.connect_times[i], 90));
        let (r50, r90) = (med(0) / med(1), p90(0) / p90(1));
        println!();
        println!(
            "- ours / async-opcua pair, median: **{r50:.2}** (target <= 0.40: {}); p90: **{r90:.2}** (target <= 0.40: \
             {})",
            verdict(r50 <= 0.40),
            verdict(r90 <= 0.40)
        );

        println!("\n### Read round trips (one Double, one session)\n");
        println!(
            "| client -> server | sequential reads/s | median RTT us | p99 RTT us | {CONCURRENCY} concurrent reads/s |"
        );
        println!("|---|--:|--:|--:|--:|");
        for (i, pair) in Pair::ALL.iter().enumerate() {
            let s = &m.seq[i];
            println!(
                "| {} | {:.0} | {:.0} | {:.0} | {:.0} |",
                pair.name(),
                s.per_second(),
                ms(percentile(&s.samples, 50)) * 1e3,
                ms(percentile(&s.samples, 99)) * 1e3,
                m.conc[i].per_second()
            );
        }
        let rs = m.seq[0].per_second() / m.seq[1].per_second();
        let rc = m.conc[0].per_second() / m.conc[1].per_second();
        println!();
        println!("- sequential, ours / async-opcua pair: **{rs:.2}x** (target >= 1.5x: {})", verdict(rs >= 1.5));
        println!(
            "- {CONCURRENCY} concurrent, ours / async-opcua pair: **{rc:.2}x** (target >= 1.5x: {})",
            verdict(rc >= 1.5)
        );

        let l = &self.limit;
        println!("\n### 1 MiB ByteString Read\n");
        println!("Single-core HMAC-SHA256 + AES-256-CBC limit (SymmetricSealer / SymmetricOpener, one thread, 1 MiB in {} chunks):\n", l.chunks);
        println!("| seal MB/s | open MB/s | seal then open on one core, MB/s |");
        println!("|--:|--:|--:|");
        println!("| {:.0} | {:.0} | {:.0} |", l.seal, l.open, l.serial());
        println!();
        println!("| client -> server | reads | median ms | MB/s | of single-core limit | of seal rate |");
        println!("|---|--:|--:|--:|--:|--:|");
        for (i, pair) in Pair::ALL.iter().enumerate() {
            let b = &m.blob[i];
            println!(
                "| {} | {} | {:.2} | {:.0} | {:.0} % | {:.0} % |",
                pair.name(),
                b.ops,
                ms(percentile(&b.samples, 50)),
                b.mb_per_second(),
                100.0 * b.mb_per_second() / l.serial(),
                100.0 * b.mb_per_second() / l.seal
            );
        }
        let share = m.blob[0].mb_per_second() / l.serial();
        println!();
        println!(
            "- certvault -> certvault: **{:.0} %** of the single-core limit (target >= 80 %: {})",
            100.0 * share,
            verdict(share >= 0.80)
        );
        println!(
            "\nMB = 10^6 bytes of ByteString value. The single-core limit is one core sealing and then opening every \
             byte (1 / (1/seal + 1/open)); \"of seal rate\" compares with sealing alone, the bound if sealing and \
             opening overlapped perfectly on two cores."
        );

        match &self.swtpm {
            None => println!("\n### swtpm token as the server's vault\n\nnot run (set {SWTPM_ENV}=1)"),
            Some(Err(why)) => println!("\n### swtpm token as the server's vault\n\nSKIPPED: {why}"),
            Some(Ok(s)) => {
                println!("\n### swtpm token as the server's vault (tpm2-pkcs11 over swtpm)\n");
                println!(
                    "- token key (RSA-2048), measured in the server process before serving, one at a time: {:.0} signatures/s \
                     (RSA-PKCS#1 v1.5 SHA-256), {:.0} decryptions/s (RSA-OAEP SHA-1)",
                    s.sign_per_s, s.decrypt_per_s
                );
                println!("- server CPUs: {}", s.server_cpus);
                println!(
                    "- load: {LOADERS} tasks of our client connecting in a loop (full connect + Read + close): {} \
                     connects in {:.1} s ({:.1}/s)",
                    s.connects_during_load,
                    s.load_secs,
                    s.connects_during_load as f64 / s.load_secs
                );
                println!();
                println!("| established session, sequential Reads | reads | median us | p99 us | max us |");
                println!("|---|--:|--:|--:|--:|");
                for (name, t) in [("alone (baseline)", &s.baseline), ("while the vault is saturated", &s.loaded)] {
                    let max = t.iter().max().copied().unwrap_or_default();
                    println!(
                        "| {name} | {} | {:.0} | {:.0} | {:.0} |",
                        t.len(),
                        ms(percentile(t, 50)) * 1e3,
                        ms(percentile(t, 99)) * 1e3,
                        ms(max) * 1e3
                    );
                }
                let r = ms(percentile(&s.loaded, 99)) / ms(percentile(&s.baseline, 99));
                println!();
                println!("- p99 under load / baseline: **{r:.2}x** (target < 2x: {})", verdict(r < 2.0));
            }
        }
    }
}
