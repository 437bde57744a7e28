//! Secure-channel benchmark (issue 3, "Benchmark"), one run, one binary:
//!
//! 1. our server (Basic256Sha256 + SignAndEncrypt, RSA-2048 key in a real vaultd) in a child process of this
//!    benchmark, pinned with `taskset` to CPU 0 together with its vaultd;
//! 2. secure-channel opens (TCP connect, HEL/ACK, OPN Issue; each channel then closed, untimed) by our client with its
//!    key in a second vaultd, by our client with a software key, and by the async-opcua 0.19 client, interleaved;
//! 3. MSG round trips with SignAndEncrypt over one open channel of our client, 8 KiB and 1 MiB request bodies;
//! 4. the single-core HMAC-SHA256 + AES-256-CBC limit: the crate's own `SymmetricSealer`/`SymmetricOpener` over the
//!    same chunks, one thread;
//! 5. a Markdown table on stdout.
//!
//! The client side (this process, the clients' vaultd) runs on CPU 1. Without `taskset` or with fewer than two CPUs
//! the run is unpinned and says so. Environment: `CHBENCH_OPENS` (opens per client, default 200), `CHBENCH_QUICK=1`
//! (20 opens, short throughput runs), `CHBENCH_PIN=0` (no pinning). Without the `--bench` argument (`cargo test
//! --benches`) it is a smoke run of 5 opens per client.
//!
//! Every key and certificate is made at run time; every child process is stopped by a drop guard, also on panic.
#![forbid(unsafe_code)]

mod common;
use common::*;

use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use certvault_opcua::channel::asymmetric::LocalIdentity;
use certvault_opcua::channel::chunk::SequenceHeader;
use certvault_opcua::channel::keys::ChannelKeys;
use certvault_opcua::channel::policy::{SecurityMode, SecurityPolicy};
use certvault_opcua::channel::symmetric::{SymmetricOpener, SymmetricSealer};
use certvault_opcua::client::{Client, ClientOptions};
use certvault_opcua::server::ServerBuilder;
use certvault_opcua::service::BodyCodec;
use certvault_opcua::transport::uacp::{ChunkType, Limits, MessageType};
use certvault_tests::{identity, soft_key, PeerPki, Vaultd, STEP_TIMEOUT};
use opcua::client::transport::{TcpConnector, TransportConfiguration, TransportPollResult};
use opcua::client::{AsyncSecureChannel, SessionRetryPolicy};
use opcua::crypto::CertificateStore;
use opcua::sync::RwLock;
use opcua::types::{ByteString, ContextOwned, DecodingOptions, EndpointDescription, NamespaceMap};
use opcua_types::{DateTime, GetEndpointsRequest, GetEndpointsResponse, NodeId, ObjectId, RequestHeader, UAString};

const POLICY: SecurityPolicy = SecurityPolicy::Basic256Sha256;
const MODE: SecurityMode = SecurityMode::SignAndEncrypt;
const SERVER_URI: &str = "urn:certvault:chbench:server";
const CLIENT_URI: &str = "urn:certvault:chbench:client";
const PEER_CLIENT_URI: &str = "urn:async-opcua:chbench:client";
/// CPU of the server process and its vaultd; the client side gets [`CLIENT_CPU`].
const SERVER_CPU: &str = "0";
const CLIENT_CPU: &str = "1";
const ROLE_ENV: &str = "CHBENCH_ROLE";
const PINNED_ENV: &str = "CHBENCH_PINNED";
/// Discarded opens per client before measuring.
const WARMUP_OPENS: usize = 3;
/// The longest string the server's decoder accepts (async-opcua-types' default limit).
const MAX_STRING: usize = 65_535;
const KIB: usize = 1024;
const SIZES: [usize; 2] = [8 * KIB, 1024 * KIB];

fn main() {
    if std::env::var(ROLE_ENV).as_deref() == Ok("server") {
        server_main();
    } else {
        client_main();
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Server process

/// Our server with its key in its own vaultd; prints `READY <url> <cert base64> <cpus>` and serves until stdin closes.
fn server_main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let vaultd = Vaultd::start(env!("CARGO_BIN_EXE_tests-vaultd"));
    let key = vaultd.generate_rsa("opcua-server", 2048);
    let cert = certvault_tests::self_signed(&key, "chbench server", SERVER_URI);
    let server = rt
        .block_on(
            ServerBuilder::new("opc.tcp://127.0.0.1:0/")
                .application_uri(SERVER_URI)
                .product_uri("urn:certvault:chbench")
                .application_name("certvault chbench server")
                .identity(key, cert.clone())
                .expect("server identity")
                .endpoint(POLICY, MODE)
                // Trust decisions are not what this measures, and they would cost both clients the same.
                .accept_any_certificate()
                .start(),
        )
        .expect("server starts");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&cert);
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY {} {} {}", server.endpoint_url(), b64, cpus_allowed()).expect("stdout");
    out.flush().expect("stdout");
    drop(out);
    // The benchmark closes our stdin when it is done (or dies): then stop the server and, by drop, the vaultd.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    rt.block_on(server.shutdown());
    drop(vaultd);
}

/// The server child process: closing its stdin asks it to stop (and stop its vaultd); killed if it does not.
struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    url: String,
    certificate: Vec<u8>,
    cpus: String,
}

impl ServerProcess {
    fn spawn(pinned: bool) -> ServerProcess {
        let exe = std::env::current_exe().expect("current exe");
        let mut cmd = if pinned {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(SERVER_CPU).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let mut child = cmd
            .env(ROLE_ENV, "server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the server process");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("server stdout");
        // From here on the guard owns the child, so a failure below still stops it.
        let mut guard =
            ServerProcess { child, stdin, url: String::new(), certificate: Vec::new(), cpus: String::new() };
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read the server's READY line");
        let mut parts = line.split_whitespace();
        assert_eq!(parts.next(), Some("READY"), "server said {line:?}");
        guard.url = parts.next().expect("url").to_owned();
        guard.certificate =
            base64::engine::general_purpose::STANDARD.decode(parts.next().expect("certificate")).expect("base64");
        guard.cpus = parts.next().unwrap_or("?").to_owned();
        guard
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
// Client process

fn client_main() {
    let cpus = cpus_online();
    let want_pin = env_flag("CHBENCH_PIN").as_deref() != Some("0");
    let pinned = env_flag(PINNED_ENV).as_deref() == Some("1");
    if want_pin && !pinned && cpus >= 2 && taskset_available() {
        // Re-run this benchmark on the client CPU; the server process is started on the other one.
        let exe = std::env::current_exe().expect("current exe");
        let status = Command::new("taskset")
            .arg("-c")
            .arg(CLIENT_CPU)
            .arg(exe)
            .args(std::env::args_os().skip(1))
            .env(PINNED_ENV, "1")
            .status()
            .expect("re-run under taskset");
        std::process::exit(status.code().unwrap_or(1));
    }
    let unpinned_reason = unpinned_reason(pinned, want_pin, cpus, "CHBENCH_PIN=0");

    // `cargo test --benches` runs this binary without `--bench`: a smoke run (5 opens, short phases).
    let test_mode = !std::env::args().any(|a| a == "--bench");
    let quick = test_mode || env_flag("CHBENCH_QUICK").as_deref() == Some("1");
    let opens: usize = env_flag("CHBENCH_OPENS").map(|v| v.parse().expect("CHBENCH_OPENS must be a number")).unwrap_or(
        match (test_mode, quick) {
            (true, _) => 5,
            (false, true) => 20,
            (false, false) => 200,
        },
    );
    assert!(opens > 0, "CHBENCH_OPENS must be positive");
    let load_before = loadavg();
    let cpu_before = CpuSnapshot::take();
    let started = Instant::now();

    let server = ServerProcess::spawn(pinned);
    eprintln!("chbench: server at {} on CPUs {}", server.url, server.cpus);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");

    // Client identities: one key in the clients' own vaultd (this process's CPU), one in software.
    let client_vaultd = Vaultd::start(env!("CARGO_BIN_EXE_tests-vaultd"));
    let vault_identity = identity(client_vaultd.generate_rsa("opcua-client", 2048), "chbench client", CLIENT_URI);
    let soft_identity = identity(soft_key(2048, "chbench-client"), "chbench client", CLIENT_URI);
    let peer = Peer::new(&server);

    let open_rows = rt.block_on(measure_opens(&server, &vault_identity, &soft_identity, &peer, opens));
    let msg_rows = rt.block_on(measure_messages(&server, &vault_identity, quick));
    let limit_rows = measure_limits(quick);
    drop(rt);
    drop(server);
    drop(client_vaultd);
    // Every child has been waited for, so its CPU time is in our cutime/cstime.
    let others = cpu_before.others_share(&CpuSnapshot::take());

    let report = Report {
        date: date(),
        cpu: cpu_model(),
        cpus,
        pinning: match unpinned_reason {
            None => format!(
                "yes (taskset): server process and its vaultd on CPU {SERVER_CPU}; clients, client vaultd and the \
                 crypto limit on CPU {} (Cpus_allowed_list: client {}, server {})",
                CLIENT_CPU,
                cpus_allowed(),
                open_rows.server_cpus
            ),
            Some(why) => format!("no ({why}): every process may run on any CPU"),
        },
        load_before,
        load_after: loadavg(),
        others,
        opens,
        mode: match (test_mode, quick) {
            (true, _) => "test mode (no --bench argument: smoke run)",
            (false, true) => "quick (CHBENCH_QUICK=1)",
            (false, false) => "full",
        },
        elapsed: started.elapsed(),
        open_rows,
        msg_rows,
        limit_rows,
    };
    report.print();
}

// ---------------------------------------------------------------------------------------------------------------
// Secure-channel opens

/// The async-opcua client's side: its PKI directory (software key as a PEM file) and the endpoint to open.
struct Peer {
    _pki: PeerPki,
    store: Arc<RwLock<CertificateStore>>,
    endpoint: EndpointDescription,
    url: String,
}

impl Peer {
    fn new(server: &ServerProcess) -> Peer {
        let pki = PeerPki::new("async-opcua chbench client", PEER_CLIENT_URI);
        pki.trust("chbench-server", &server.certificate);
        let mut store = CertificateStore::new(pki.path());
        store.set_trust_unknown_certs(true);
        let endpoint = EndpointDescription {
            endpoint_url: server.url.as_str().into(),
            security_policy_uri: POLICY.uri().into(),
            security_mode: MODE.to_wire(),
            server_certificate: ByteString::from(server.certificate.clone()),
            ..Default::default()
        };
        Peer { _pki: pki, store: Arc::new(RwLock::new(store)), endpoint, url: server.url.clone() }
    }
}

/// Opens a channel with our client (timed: connect, HEL/ACK, OPN Issue until the token is installed), checks it,
/// then closes it (untimed).
async fn open_ours(url: &str, identity: &LocalIdentity, server_certificate: &[u8]) -> Duration {
    let mut options = ClientOptions::new(POLICY, MODE);
    options.identity = Some(identity.clone());
    options.server_certificate = Some(server_certificate.to_vec());
    let start = Instant::now();
    let client = Client::connect_with(url, options).await.unwrap_or_else(|e| panic!("our client: open failed: {e}"));
    let took = start.elapsed();
    let state = client.channel_state();
    assert!(state.open && state.secure_channel_id != 0 && state.token_id != 0, "channel not open: {state:?}");
    tokio::time::timeout(STEP_TIMEOUT, client.close())
        .await
        .expect("close in time")
        .unwrap_or_else(|e| panic!("our client: close failed: {e}"));
    took
}

/// The same with async-opcua's `AsyncSecureChannel` (what its `Client::get_endpoints` builds), without a session
/// and without a service call: `connect_no_retry` returns once the OpenSecureChannel response is processed.
async fn open_async_opcua(peer: &Peer) -> Duration {
    let start = Instant::now();
    let channel = AsyncSecureChannel::new(
        peer.store.clone(),
        peer.endpoint.clone().into(),
        SessionRetryPolicy::new(Duration::from_secs(1), Some(0), Duration::from_millis(100)),
        false,
        Arc::default(),
        TransportConfiguration {
            send_buffer_size: 65_535,
            recv_buffer_size: 65_535,
            max_message_size: opcua::types::constants::MAX_MESSAGE_SIZE,
            max_chunk_count: opcua::types::constants::MAX_CHUNK_COUNT,
        },
        60_000,
        Arc::new(RwLock::new(ContextOwned::new_default(NamespaceMap::new(), DecodingOptions::default()))),
    );
    let connector = TcpConnector::new(&peer.url).expect("connector");
    let mut event_loop = tokio::time::timeout(STEP_TIMEOUT, channel.connect_no_retry(&connector))
        .await
        .expect("async-opcua open in time")
        .unwrap_or_else(|e| panic!("async-opcua client: open failed: {e}"));
    let took = start.elapsed();
    channel.close_channel().await;
    loop {
        let polled = tokio::time::timeout(STEP_TIMEOUT, event_loop.poll()).await.expect("async-opcua close in time");
        if let TransportPollResult::Closed(_) = polled {
            break;
        }
    }
    took
}

struct OpenRows {
    vault: Vec<Duration>,
    soft: Vec<Duration>,
    peer: Vec<Duration>,
    server_cpus: String,
}

async fn measure_opens(
    server: &ServerProcess,
    vault: &LocalIdentity,
    soft: &LocalIdentity,
    peer: &Peer,
    opens: usize,
) -> OpenRows {
    let url = server.url.as_str();
    let cert = server.certificate.as_slice();
    let mut rows = OpenRows {
        vault: Vec::with_capacity(opens),
        soft: Vec::with_capacity(opens),
        peer: Vec::with_capacity(opens),
        server_cpus: server.cpus.clone(),
    };
    for i in 0..WARMUP_OPENS + opens {
        // Rotate which client goes first, so drift and periodic noise hit all three alike.
        let mut round = [Duration::ZERO; 3];
        for k in 0..3 {
            let which = (i + k) % 3;
            round[which] = match which {
                0 => open_ours(url, vault, cert).await,
                1 => open_ours(url, soft, cert).await,
                _ => open_async_opcua(peer).await,
            };
        }
        if i >= WARMUP_OPENS {
            rows.vault.push(round[0]);
            rows.soft.push(round[1]);
            rows.peer.push(round[2]);
        }
        if (i + 1) % 50 == 0 {
            eprintln!("chbench: {} of {} open rounds", i + 1, WARMUP_OPENS + opens);
        }
    }
    rows
}

// ---------------------------------------------------------------------------------------------------------------
// MSG throughput

/// A GetEndpoints request whose encoded body (NodeId + request) is exactly `total` bytes: `profileUris` carries the
/// padding as strings that match no transport profile, so the server decodes all of it and answers with an empty
/// endpoint list (a response of a few dozen bytes). Returns the body and the offset of its RequestHandle.
fn padded_get_endpoints(codec: &BodyCodec, url: &str, total: usize) -> (Vec<u8>, usize) {
    // One timestamp for every encoding, so the two encodings below differ only in the RequestHandle.
    let now = DateTime::now();
    let request = |handle: u32, uris: Vec<UAString>| {
        let mut header = RequestHeader::new(&NodeId::null(), &now, handle);
        header.timeout_hint = 60_000;
        GetEndpointsRequest {
            request_header: header,
            endpoint_url: url.into(),
            locale_ids: None,
            profile_uris: Some(uris),
        }
    };
    let encode = |r: &GetEndpointsRequest| {
        codec.encode(ObjectId::GetEndpointsRequest_Encoding_DefaultBinary, r).expect("encode GetEndpoints")
    };
    let base = encode(&request(1, Vec::new())).len();
    let mut rest = total.checked_sub(base + 4).expect("body too small for the request") + 4;
    let mut uris = Vec::new();
    while rest > 0 {
        // Each string costs a 4-byte length and its bytes; never leave a remainder too small for a length.
        let mut take = rest.min(MAX_STRING + 4);
        if (1..4).contains(&(rest - take)) {
            take -= 4;
        }
        uris.push(UAString::from("p".repeat(take - 4)));
        rest -= take;
    }
    let a = encode(&request(0x1111_1111, uris.clone()));
    let b = encode(&request(0x2222_2222, uris));
    assert_eq!(a.len(), total, "padded body length");
    let at = a.iter().zip(&b).position(|(x, y)| x != y).expect("request handle offset");
    assert_eq!(a[at..at + 4], 0x1111_1111u32.to_le_bytes());
    (a, at)
}

struct MsgRow {
    size: usize,
    chunks_per_message: usize,
    round_trips: usize,
    total: Duration,
    median: Duration,
}

async fn measure_messages(server: &ServerProcess, identity: &LocalIdentity, quick: bool) -> Vec<MsgRow> {
    let mut options = ClientOptions::new(POLICY, MODE);
    options.identity = Some(identity.clone());
    options.server_certificate = Some(server.certificate.clone());
    let client = Client::connect_with(&server.url, options).await.expect("open the throughput channel");
    let codec = BodyCodec::new();
    let max_body = chunk_body_len();
    let mut rows = Vec::new();
    let mut handle = 1u32;
    for size in SIZES {
        let (template, at) = padded_get_endpoints(&codec, &server.url, size);
        // Measure for a fixed time after a short warm-up, at least a few round trips.
        let budget = Duration::from_millis(match (quick, size > 64 * KIB) {
            (true, _) => 1_000,
            (false, false) => 4_000,
            (false, true) => 8_000,
        });
        let mut times = Vec::new();
        let mut total = Duration::ZERO;
        let mut warmup = 5;
        while warmup > 0 || total < budget || times.len() < 10 {
            handle = handle.wrapping_add(1).max(1);
            let mut body = template.clone();
            body[at..at + 4].copy_from_slice(&handle.to_le_bytes());
            let start = Instant::now();
            let response = client.call(body).await.unwrap_or_else(|e| panic!("{size}-byte round trip: {e}"));
            let took = start.elapsed();
            let decoded: GetEndpointsResponse = codec
                .decode_response(ObjectId::GetEndpointsResponse_Encoding_DefaultBinary, &response)
                .unwrap_or_else(|e| panic!("{size}-byte round trip: bad response: {e}"));
            assert_eq!(decoded.response_header.request_handle, handle, "response to another request");
            assert_eq!(decoded.endpoints.as_deref().map(<[_]>::len), Some(0), "the padding matches no profile");
            if warmup > 0 {
                warmup -= 1;
                continue;
            }
            times.push(took);
            total += took;
        }
        rows.push(MsgRow {
            size,
            chunks_per_message: size.div_ceil(max_body),
            round_trips: times.len(),
            total,
            median: percentile(&times, 50),
        });
    }
    let state = client.channel_state();
    assert!(state.open, "the throughput channel stayed open");
    client.close().await.expect("close the throughput channel");
    rows
}

// ---------------------------------------------------------------------------------------------------------------
// Single-core crypto limit

/// Largest body of one MSG chunk at the default 65,535-byte buffers with Basic256Sha256 + SignAndEncrypt.
fn chunk_body_len() -> usize {
    let (sealer, _) = symmetric_pair();
    sealer.layout().max_body_len(Limits::default().send_buffer_size as usize).expect("chunk body length")
}

/// A sealer and an opener of one direction of a fresh Basic256Sha256 token (keys derived from random nonces).
fn symmetric_pair() -> (SymmetricSealer, SymmetricOpener) {
    let keys = ChannelKeys::derive(POLICY, &random_bytes(32), &random_bytes(32)).expect("derive keys");
    (
        SymmetricSealer::new(POLICY, MODE, &keys.client).expect("sealer"),
        SymmetricOpener::new(POLICY, MODE, &keys.client).expect("opener"),
    )
}

struct LimitRow {
    size: usize,
    seal: f64,
    open: f64,
}

/// Seals and opens `size`-byte messages split into chunks exactly as the channel splits them, on this thread.
fn measure_limits(quick: bool) -> Vec<LimitRow> {
    let (sealer, opener) = symmetric_pair();
    let max_body = chunk_body_len();
    let budget = Duration::from_millis(if quick { 500 } else { 2_000 });
    let mut rows = Vec::new();
    for size in SIZES {
        let body = random_bytes(size);
        let pieces: Vec<&[u8]> = body.chunks(max_body).collect();
        let mut sequence = 0u32;
        let seal_all = |sequence: &mut u32| -> Vec<Vec<u8>> {
            let last = pieces.len() - 1;
            pieces
                .iter()
                .enumerate()
                .map(|(i, piece)| {
                    *sequence = sequence.wrapping_add(1);
                    let chunk_type = if i == last { ChunkType::Final } else { ChunkType::Intermediate };
                    let header = SequenceHeader { sequence_number: *sequence, request_id: 7 };
                    sealer.seal(MessageType::Message, chunk_type, 1, 1, header, piece).expect("seal")
                })
                .collect()
        };
        // Correctness first: what is sealed opens to the same bytes.
        let sealed = seal_all(&mut sequence);
        let reopened: Vec<u8> = sealed.iter().flat_map(|c| opener.open(c).expect("open").into_body()).collect();
        assert_eq!(reopened, body, "seal then open returns the body");

        let (mut n, start) = (0usize, Instant::now());
        while n < 3 || start.elapsed() < budget {
            black_box(seal_all(&mut sequence));
            n += 1;
        }
        let seal = (n * size) as f64 / start.elapsed().as_secs_f64() / 1e6;

        let (mut n, start) = (0usize, Instant::now());
        while n < 3 || start.elapsed() < budget {
            let mut got = 0;
            for chunk in &sealed {
                got += black_box(opener.open(chunk).expect("open")).body().len();
            }
            assert_eq!(got, size);
            n += 1;
        }
        let open = (n * size) as f64 / start.elapsed().as_secs_f64() / 1e6;
        rows.push(LimitRow { size, seal, open });
    }
    rows
}

// ---------------------------------------------------------------------------------------------------------------
// Report

fn size_name(size: usize) -> String {
    if size >= 1024 * KIB {
        format!("{} MiB", size / (1024 * KIB))
    } else {
        format!("{} KiB", size / KIB)
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
    opens: usize,
    mode: &'static str,
    elapsed: Duration,
    open_rows: OpenRows,
    msg_rows: Vec<MsgRow>,
    limit_rows: Vec<LimitRow>,
}

impl Report {
    fn print(mut self) {
        println!("\n## certvault secure-channel benchmark\n");
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
            "- mode: {}; {} measured opens per client after {} warm-up opens, interleaved; run took {:.0} s",
            self.mode,
            self.opens,
            WARMUP_OPENS,
            self.elapsed.as_secs_f64()
        );
        println!(
            "- build: {}",
            if cfg!(debug_assertions) { "debug (figures are not meaningful)" } else { "optimised (bench profile)" }
        );
        println!("- policy: Basic256Sha256, SignAndEncrypt, RSA-2048 both sides; server key in vaultd; 127.0.0.1");

        println!("\n### Secure-channel open (TCP connect + HEL/ACK + OPN Issue; close untimed)\n");
        println!("| client | client key | opens | median ms | p90 ms | min ms |");
        println!("|---|---|--:|--:|--:|--:|");
        let rows = &mut self.open_rows;
        let mut stats = Vec::new();
        for (name, key, times) in [
            ("certvault", "vaultd", &mut rows.vault),
            ("certvault", "software (in process)", &mut rows.soft),
            ("async-opcua 0.19", "software (PEM file)", &mut rows.peer),
        ] {
            let median = percentile(times, 50);
            let p90 = percentile(times, 90);
            let min = times[0];
            println!("| {name} | {key} | {} | {:.2} | {:.2} | {:.2} |", times.len(), ms(median), ms(p90), ms(min));
            stats.push(median);
        }
        println!();
        println!("- ratio certvault (vaultd key) / async-opcua, median: **{:.2}**", ms(stats[0]) / ms(stats[2]));
        println!("- ratio certvault (software key) / async-opcua, median: **{:.2}**", ms(stats[1]) / ms(stats[2]));

        println!("\n### Single-core HMAC-SHA256 + AES-256-CBC limit (SymmetricSealer / SymmetricOpener, one thread)\n");
        println!("| message | seal MB/s | open MB/s | seal then open, serial MB/s |");
        println!("|---|--:|--:|--:|");
        for r in &self.limit_rows {
            println!("| {} | {:.0} | {:.0} | {:.0} |", size_name(r.size), r.seal, r.open, serial(r.seal, r.open));
        }

        println!(
            "\n### MSG throughput, SignAndEncrypt, our client -> our server, one channel, one request at a time\n"
        );
        println!(
            "| request body | chunks/msg | round trips | median RTT ms | MB/s | chunks/s | of serial limit | of seal limit |"
        );
        println!("|---|--:|--:|--:|--:|--:|--:|--:|");
        for r in &self.msg_rows {
            let secs = r.total.as_secs_f64();
            let mbps = (r.round_trips * r.size) as f64 / secs / 1e6;
            let chunks = (r.round_trips * r.chunks_per_message) as f64 / secs;
            let limit = self.limit_rows.iter().find(|l| l.size == r.size).expect("limit row");
            println!(
                "| {} | {} | {} | {:.3} | {:.0} | {:.0} | {:.0} % | {:.0} % |",
                size_name(r.size),
                r.chunks_per_message,
                r.round_trips,
                ms(r.median),
                mbps,
                chunks,
                100.0 * mbps / serial(limit.seal, limit.open),
                100.0 * mbps / limit.seal
            );
        }
        println!();
        println!(
            "MB = 10^6 bytes of request body. A round trip: the client seals every chunk, writes them, the server"
        );
        println!(
            "opens and reassembles them, decodes the GetEndpoints request (its profileUris carry the padding) and"
        );
        println!("answers with an empty endpoint list; the client opens and decodes that. \"Serial limit\" is");
        println!("1 / (1/seal + 1/open) of the row above: the rate if sealing and opening never overlapped.");
    }
}

fn serial(seal: f64, open: f64) -> f64 {
    1.0 / (1.0 / seal + 1.0 / open)
}
