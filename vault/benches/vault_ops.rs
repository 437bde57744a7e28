//! Latency and throughput of private-key operations through each certvault backend, in one run.
//!
//! ```text
//! cargo bench -p certvault --bench vault_ops                      # builds target/release/vaultd too
//! cargo build --release -p certvault --bin vaultd                 # only when running the executable by hand
//! VAULT_BENCH_QUICK=1 cargo bench -p certvault --bench vault_ops   # CI smoke run: 50 ops per cell
//! VAULT_BENCH_OPS=500 cargo bench -p certvault --bench vault_ops   # any fixed count per cell
//! ```
//!
//! Backends: `in-process` ([`SoftKey`], the AWS-LC code vaultd itself runs), `vaultd` (a real daemon on a Unix
//! socket, spawned here on a fresh container in a temp dir) and `softhsm2` (the PKCS#11 backend on a SoftHSM2 token
//! in a temp dir; skipped with a note when the module is missing). Each cell runs single-threaded, sequential
//! operations after a warm-up, and times every operation on its own, so p50/p99 are real per-operation latencies.
//! The backends take turns in rounds within a cell, so changing load on a shared machine hits them alike.
//! One extra cell runs RSA-2048 PKCS#1 signatures on vaultd from two client threads at once.
//!
//! Results are checked, not assumed: every output's length, and the first and last output of every cell (the
//! signature verifies under the key's public key, the decryption returns the plaintext that was encrypted). A cell
//! whose operations fail is reported as failed instead of timed. Targets are printed as measured yes/no lines; the
//! benchmark never fails on them. See `docs/benchmarks.md`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use certvault::container::{Container, KdfParams};
use certvault::pkcs11::softhsm;
use certvault::pkcs11::{Pkcs11Key, Pkcs11Token};
use certvault::soft::{generate_pkcs8, SoftKey};
use certvault::{
    DaemonClient, DecryptAlg, KeyAlgorithm, KeyPolicy, KeySelector, KeyStore, PublicKey, SharedKey, SignAlg, VaultKey,
};

const RSA2048: KeyAlgorithm = KeyAlgorithm::Rsa { bits: 2048 };
const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &[u8] = b"123456";
const ADMIN_PIN: &[u8] = b"bench-admin-pin";
/// Cheap Argon2id: the cost is paid per login, never per operation, so it does not affect the figures.
const BENCH_KDF: KdfParams = KdfParams { m_kib: 256, t: 1, p: 1 };
/// Bytes signed per signature (the backend hashes them; about a TLS 1.3 CertificateVerify input, or a small OPC UA
/// message chunk).
const MSG_LEN: usize = 256;
/// Encrypted once to the key, decrypted by every decrypt operation: a 32-byte symmetric key, as OPC UA sends.
const PLAINTEXT: &[u8; 32] = b"32-byte symmetric key (bench) ..";
/// Default operations per cell.
const RSA_OPS: usize = 2000;
const EC_OPS: usize = 5000;
const QUICK_OPS: usize = 50;
/// Targets, reported as measured yes/no lines.
const TARGET_RSA_SIGN_OPS: f64 = 3500.0;
const TARGET_OVERHEAD_US: f64 = 50.0;
const CONCURRENT_THREADS: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Rsa2048,
    P256,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Sign(SignAlg),
    Decrypt(DecryptAlg),
}

/// The cells of every backend, in table order.
const CELLS: [(KeyKind, Op); 5] = [
    (KeyKind::Rsa2048, Op::Sign(SignAlg::RsaPkcs1Sha256)),
    (KeyKind::Rsa2048, Op::Sign(SignAlg::RsaPssSha256)),
    (KeyKind::Rsa2048, Op::Decrypt(DecryptAlg::RsaOaepSha1)),
    (KeyKind::Rsa2048, Op::Decrypt(DecryptAlg::RsaOaepSha256)),
    (KeyKind::P256, Op::Sign(SignAlg::EcdsaP256Sha256)),
];

fn op_name(kind: KeyKind, op: Op) -> &'static str {
    match (kind, op) {
        (KeyKind::Rsa2048, Op::Sign(SignAlg::RsaPkcs1Sha256)) => "RSA-2048 sign PKCS#1 v1.5 SHA-256",
        (KeyKind::Rsa2048, Op::Sign(SignAlg::RsaPssSha256)) => "RSA-2048 sign PSS SHA-256",
        (KeyKind::Rsa2048, Op::Decrypt(DecryptAlg::RsaOaepSha1)) => "RSA-2048 decrypt OAEP SHA-1",
        (KeyKind::Rsa2048, Op::Decrypt(DecryptAlg::RsaOaepSha256)) => "RSA-2048 decrypt OAEP SHA-256",
        (KeyKind::P256, Op::Sign(SignAlg::EcdsaP256Sha256)) => "P-256 sign ECDSA SHA-256",
        _ => "other",
    }
}

/// How many operations each cell runs.
#[derive(Clone, Copy, Debug)]
struct Counts {
    rsa: usize,
    ec: usize,
    /// Where the counts came from, for the report.
    source: &'static str,
}

impl Counts {
    fn from_env(bench_mode: bool) -> Counts {
        let fixed =
            std::env::var("VAULT_BENCH_OPS").ok().and_then(|v| v.trim().parse::<usize>().ok()).filter(|&n| n > 0);
        let quick = std::env::var("VAULT_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        if let Some(n) = fixed {
            Counts { rsa: n, ec: n, source: "VAULT_BENCH_OPS" }
        } else if quick {
            Counts { rsa: QUICK_OPS, ec: QUICK_OPS, source: "VAULT_BENCH_QUICK" }
        } else if !bench_mode {
            // `cargo test --benches` runs this binary without `--bench`: a smoke run, like criterion's test mode.
            Counts { rsa: QUICK_OPS, ec: QUICK_OPS, source: "test mode (no --bench argument)" }
        } else {
            Counts { rsa: RSA_OPS, ec: EC_OPS, source: "defaults" }
        }
    }

    fn ops(&self, kind: KeyKind) -> usize {
        match kind {
            KeyKind::Rsa2048 => self.rsa,
            KeyKind::P256 => self.ec,
        }
    }
}

fn warmup(n: usize) -> usize {
    (n / 10).clamp(5, 200)
}

/// The figures of one cell.
#[derive(Clone, Copy, Debug)]
struct Stats {
    ops_per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

impl Stats {
    fn new(mut latencies: Vec<Duration>, wall: Duration) -> Stats {
        latencies.sort_unstable();
        Stats {
            ops_per_s: latencies.len() as f64 / wall.as_secs_f64(),
            p50_us: percentile_us(&latencies, 0.50),
            p99_us: percentile_us(&latencies, 0.99),
        }
    }
}

/// Nearest-rank percentile of sorted latencies, in microseconds.
fn percentile_us(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e6
}

/// One row of the table.
struct Row {
    backend: String,
    kind: KeyKind,
    op: Op,
    result: Result<Stats, String>,
    /// Compared with the in-process row of the same operation.
    comparable: bool,
}

/// The two keys of a backend.
struct Keys {
    rsa: SharedKey,
    ec: SharedKey,
}

impl Keys {
    fn get(&self, kind: KeyKind) -> &dyn VaultKey {
        match kind {
            KeyKind::Rsa2048 => self.rsa.as_ref(),
            KeyKind::P256 => self.ec.as_ref(),
        }
    }
}

/// What a cell feeds its key, and how it checks what comes back.
struct Workload {
    op: Op,
    public: PublicKey,
    msg: Vec<u8>,
    ciphertext: Vec<u8>,
    out_len: usize,
}

impl Workload {
    fn new(key: &dyn VaultKey, op: Op) -> Result<Workload, String> {
        let public = PublicKey::from_spki(&key.info().spki_der).map_err(|e| format!("public key: {e}"))?;
        let msg: Vec<u8> = (0..MSG_LEN).map(|i| (i * 7 + 3) as u8).collect();
        let (ciphertext, out_len) = match op {
            Op::Sign(_) => (Vec::new(), key.info().algorithm.signature_len()),
            Op::Decrypt(alg) => {
                (public.encrypt(alg, PLAINTEXT).map_err(|e| format!("encrypting to the key: {e}"))?, PLAINTEXT.len())
            }
        };
        Ok(Workload { op, public, msg, ciphertext, out_len })
    }

    /// One operation; the output's length is checked here, its content by [`Workload::verify`].
    fn run(&self, key: &dyn VaultKey) -> Result<Vec<u8>, String> {
        let out = match self.op {
            Op::Sign(alg) => key.sign(alg, &self.msg).map_err(|e| e.to_string())?,
            Op::Decrypt(alg) => key.decrypt(alg, &self.ciphertext).map_err(|e| e.to_string())?.to_vec(),
        };
        if out.len() != self.out_len {
            return Err(format!("output of {} bytes, expected {}", out.len(), self.out_len));
        }
        Ok(out)
    }

    fn verify(&self, out: &[u8]) -> Result<(), String> {
        match self.op {
            Op::Sign(alg) => self.public.verify(alg, &self.msg, out).map_err(|e| format!("verification: {e}")),
            Op::Decrypt(_) if out == PLAINTEXT => Ok(()),
            Op::Decrypt(_) => Err("decryption returned a wrong plaintext".into()),
        }
    }

    /// Warm-up: `n` untimed operations, the first one verified.
    fn warm_up(&self, key: &dyn VaultKey, n: usize) -> Result<(), String> {
        for i in 0..n {
            let out = self.run(key)?;
            if i == 0 {
                self.verify(&out)?;
            }
        }
        Ok(())
    }
}

/// The timed operations of one backend in one cell, collected over the rounds.
struct Samples {
    latencies: Vec<Duration>,
    wall: Duration,
    first: Option<Vec<u8>>,
    last: Option<Vec<u8>>,
}

impl Samples {
    fn new(capacity: usize) -> Samples {
        Samples { latencies: Vec::with_capacity(capacity), wall: Duration::ZERO, first: None, last: None }
    }

    /// `count` timed operations; the wall time of the batch is added to the cell's.
    fn batch(&mut self, w: &Workload, key: &dyn VaultKey, count: usize) -> Result<(), String> {
        let start = Instant::now();
        for _ in 0..count {
            let t = Instant::now();
            let out = w.run(key)?;
            self.latencies.push(t.elapsed());
            if self.first.is_none() {
                self.first = Some(out);
            } else {
                self.last = Some(out);
            }
        }
        self.wall += start.elapsed();
        Ok(())
    }

    /// Verifies the first and the last output, then computes the figures.
    fn finish(self, w: &Workload) -> Result<Stats, String> {
        for out in self.first.iter().chain(self.last.iter()) {
            w.verify(out)?;
        }
        Ok(Stats::new(self.latencies, self.wall))
    }
}

/// Rounds a cell is split into. The backends take turns, round by round, so that load which comes and goes on a
/// shared machine hits all of them alike and the overhead column compares like with like.
const ROUNDS: usize = 10;

/// Runs one cell on every backend: warm-up each, then `n` timed operations each, in [`ROUNDS`] interleaved rounds.
/// A backend whose operation fails or whose output does not verify gets an error instead of figures.
fn run_cell(backends: &[(&str, &Keys)], kind: KeyKind, op: Op, n: usize) -> Vec<Result<Stats, String>> {
    let mut state: Vec<Result<(Workload, Samples), String>> = backends
        .iter()
        .map(|(_, keys)| {
            let key = keys.get(kind);
            let w = Workload::new(key, op)?;
            w.warm_up(key, warmup(n))?;
            Ok((w, Samples::new(n)))
        })
        .collect();
    let rounds = ROUNDS.min(n.max(1));
    for round in 0..rounds {
        let count = n * (round + 1) / rounds - n * round / rounds;
        for ((_, keys), st) in backends.iter().zip(state.iter_mut()) {
            let failed = match st {
                Ok((w, samples)) => samples.batch(w, keys.get(kind), count).err(),
                Err(_) => None,
            };
            if let Some(e) = failed {
                *st = Err(e);
            }
        }
    }
    state.into_iter().map(|st| st.and_then(|(w, samples)| samples.finish(&w))).collect()
}

/// `threads` threads sign at once, each with its own handle (its own connection for vaultd); throughput over the
/// span in which all of them run, latencies over all operations.
fn run_concurrent(keys: Vec<SharedKey>, op: Op, n_per_thread: usize) -> Result<Stats, String> {
    let threads = keys.len();
    let start_line = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let workers: Vec<_> = keys
            .iter()
            .map(|key| {
                let start_line = &start_line;
                s.spawn(move || {
                    let prepared = Workload::new(key.as_ref(), op).and_then(|w| {
                        w.warm_up(key.as_ref(), warmup(n_per_thread))?;
                        Ok(w)
                    });
                    // Always reach the barrier, or the others would wait forever.
                    start_line.wait();
                    let w = prepared?;
                    let mut samples = Samples::new(n_per_thread);
                    samples.batch(&w, key.as_ref(), n_per_thread)?;
                    for out in samples.first.iter().chain(samples.last.iter()) {
                        w.verify(out)?;
                    }
                    Ok::<_, String>(samples.latencies)
                })
            })
            .collect();
        start_line.wait();
        let start = Instant::now();
        let mut all = Vec::with_capacity(threads * n_per_thread);
        let mut error = None;
        for w in workers {
            match w.join() {
                Ok(Ok(lat)) => all.extend(lat),
                Ok(Err(e)) => error = Some(e),
                Err(_) => error = Some("a client thread panicked".into()),
            }
        }
        let wall = start.elapsed();
        match error {
            Some(e) => Err(e),
            None => Ok(Stats::new(all, wall)),
        }
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Backends

fn in_process_keys() -> Result<Keys, String> {
    let key = |alg: KeyAlgorithm, label: &str| -> Result<SharedKey, String> {
        let pkcs8 = generate_pkcs8(alg).map_err(|e| format!("generating {alg}: {e}"))?;
        let key = SoftKey::from_pkcs8(pkcs8, label.as_bytes().to_vec(), label.into(), true, KeyPolicy::default())
            .map_err(|e| format!("loading {alg}: {e}"))?;
        Ok(Arc::new(key))
    };
    Ok(Keys { rsa: key(RSA2048, "bench-rsa")?, ec: key(KeyAlgorithm::EcP256, "bench-p256")? })
}

/// A running vaultd on a fresh container in a temp dir. Dropping it (also while unwinding from a panic) kills the
/// daemon and removes the directory.
struct Vaultd {
    child: Child,
    socket: PathBuf,
    binary: PathBuf,
    dir: tempfile::TempDir,
}

impl Drop for Vaultd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VAULTD_BIN`, else `vaultd` next to this benchmark's `deps/` directory (`target/release/vaultd` under
/// `cargo bench`), else the binary cargo built alongside this benchmark.
fn vaultd_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("VAULTD_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() { Ok(p) } else { Err(format!("VAULTD_BIN={} is not a file", p.display())) };
    }
    let mut tried = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        // target/release/deps/vault_ops-<hash> -> target/release/vaultd
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            let p = profile_dir.join("vaultd");
            if p.is_file() {
                return Ok(p);
            }
            tried.push(p);
        }
    }
    if let Some(p) = option_env!("CARGO_BIN_EXE_vaultd").map(PathBuf::from) {
        if p.is_file() {
            return Ok(p);
        }
        tried.push(p);
    }
    Err(format!(
        "no vaultd binary (tried {}); build it with `cargo build --release -p certvault --bin vaultd` or set VAULTD_BIN",
        tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    ))
}

impl Vaultd {
    fn start() -> Result<Vaultd, String> {
        let binary = vaultd_binary()?;
        let dir =
            tempfile::Builder::new().prefix("certvault-bench-").tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let container = dir.path().join("bench.cvault");
        Container::create(&container, "CV-BENCH", PIN, ADMIN_PIN, BENCH_KDF, 3)
            .map_err(|e| format!("creating container: {e}"))?;
        let socket = dir.path().join("vaultd.sock");
        let args = ["--container".as_ref(), container.as_os_str()];
        let child = certvault::daemon::launch::start_vaultd(&binary, &args, &socket, Duration::from_secs(20))
            .map_err(|e| e.to_string())?;
        Ok(Vaultd { child, socket, binary, dir })
    }

    fn client(&self) -> Result<DaemonClient, String> {
        let c = DaemonClient::connect(&self.socket, None).map_err(|e| format!("connecting: {e}"))?;
        c.login(PIN).map_err(|e| format!("login: {e}"))?;
        Ok(c)
    }

    /// Generates the benchmark keys inside the daemon and returns handles to them.
    fn keys(&self) -> Result<Keys, String> {
        let c = self.client()?;
        for (label, alg) in [("bench-rsa", RSA2048), ("bench-p256", KeyAlgorithm::EcP256)] {
            c.generate(label, alg, KeyPolicy::default()).map_err(|e| format!("generating {alg} in vaultd: {e}"))?;
        }
        self.handles(&c)
    }

    fn handles(&self, c: &DaemonClient) -> Result<Keys, String> {
        let key = |label: &str| c.key(&KeySelector::Label(label.into())).map_err(|e| format!("opening {label}: {e}"));
        Ok(Keys { rsa: key("bench-rsa")?, ec: key("bench-p256")? })
    }
}

/// A SoftHSM2 token in a temp dir, logged in, with the benchmark keys on it.
struct SoftHsm {
    keys: Keys,
    rsa: Arc<Pkcs11Key>,
    version: String,
    _dir: tempfile::TempDir,
}

impl SoftHsm {
    fn start() -> Result<SoftHsm, String> {
        if !Path::new(SOFTHSM_MODULE).exists() {
            return Err(format!("{SOFTHSM_MODULE} is missing (install softhsm2)"));
        }
        let version = Command::new("softhsm2-util")
            .arg("--version")
            .output()
            .map_err(|e| format!("softhsm2-util not runnable ({e}); install softhsm2"))?;
        let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
        let dir = tempfile::Builder::new().prefix("certvault-bench-hsm-").tempdir().map_err(|e| format!("{e}"))?;
        let conf = softhsm::write_config(dir.path()).map_err(|e| e.to_string())?;
        // Read by the module when it is first initialized, which happens below; no other thread runs yet.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        softhsm::init_token(&conf, "certvault-bench", "123456", "12345678").map_err(|e| e.to_string())?;
        let token = Pkcs11Token::open(Path::new(SOFTHSM_MODULE), "certvault-bench", Some(PIN))
            .map_err(|e| format!("opening the token: {e}"))?;
        let mut opened = Vec::new();
        for (label, alg) in [("bench-rsa", RSA2048), ("bench-p256", KeyAlgorithm::EcP256)] {
            token
                .generate(label, alg, KeyPolicy::default())
                .map_err(|e| format!("generating {alg} on SoftHSM2: {e}"))?;
            opened
                .push(token.open_key(&KeySelector::Label(label.into())).map_err(|e| format!("opening {label}: {e}"))?);
        }
        let (rsa, ec) = (opened[0].clone(), opened[1].clone());
        Ok(SoftHsm { keys: Keys { rsa: rsa.clone(), ec }, rsa, version, _dir: dir })
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Report

fn fmt_num(x: f64) -> String {
    if x.is_nan() {
        "n/a".into()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn in_process_p50(rows: &[Row], kind: KeyKind, op: Op) -> Option<f64> {
    rows.iter()
        .find(|r| r.backend == "in-process" && r.kind == kind && r.op == op)
        .and_then(|r| r.result.as_ref().ok())
        .map(|s| s.p50_us)
}

fn overhead(rows: &[Row], row: &Row) -> Option<f64> {
    let stats = row.result.as_ref().ok()?;
    if !row.comparable {
        return None;
    }
    in_process_p50(rows, row.kind, row.op).map(|base| stats.p50_us - base)
}

fn print_table(rows: &[Row]) {
    println!("| backend | operation | ops/s | p50 µs | p99 µs | p50 overhead vs in-process µs |");
    println!("|---|---|---:|---:|---:|---:|");
    for row in rows {
        let name = op_name(row.kind, row.op);
        match &row.result {
            Ok(s) => {
                let over = if row.backend == "in-process" {
                    "—".to_string()
                } else {
                    overhead(rows, row).map_or_else(|| "—".to_string(), |o| format!("{o:+.1}"))
                };
                println!(
                    "| {} | {name} | {} | {} | {} | {over} |",
                    row.backend,
                    fmt_num(s.ops_per_s),
                    fmt_num(s.p50_us),
                    fmt_num(s.p99_us)
                );
            }
            Err(e) => println!("| {} | {name} | FAILED: {} | | | |", row.backend, e.replace('|', "/")),
        }
    }
}

fn yes_no(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "no"
    }
}

fn print_targets(rows: &[Row]) {
    let find = |backend: &str, op: Op| {
        rows.iter().find(|r| r.backend == backend && r.op == op).and_then(|r| r.result.as_ref().ok().copied())
    };
    let pkcs1 = Op::Sign(SignAlg::RsaPkcs1Sha256);
    match find("vaultd", pkcs1) {
        Some(s) => println!(
            "vaultd RSA-2048 sign ops/s >= {TARGET_RSA_SIGN_OPS:.0}: {} ({:.0}; PKCS#1 v1.5 SHA-256, 1 client thread)",
            yes_no(s.ops_per_s >= TARGET_RSA_SIGN_OPS),
            s.ops_per_s
        ),
        None => println!("vaultd RSA-2048 sign ops/s >= {TARGET_RSA_SIGN_OPS:.0}: n/a (no vaultd result)"),
    }
    let concurrent = format!("vaultd x{CONCURRENT_THREADS} threads");
    if let Some(s) = find(&concurrent, pkcs1) {
        println!(
            "vaultd RSA-2048 sign ops/s >= {TARGET_RSA_SIGN_OPS:.0} with {CONCURRENT_THREADS} client threads: {} ({:.0})",
            yes_no(s.ops_per_s >= TARGET_RSA_SIGN_OPS),
            s.ops_per_s
        );
    }
    let worst = rows
        .iter()
        .filter(|r| r.backend == "vaultd")
        .filter_map(|r| overhead(rows, r).map(|o| (o, op_name(r.kind, r.op))))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match worst {
        Some((o, name)) => println!(
            "vaultd p50 overhead <= {TARGET_OVERHEAD_US:.0} µs: {} ({o:.1}; worst of the vaultd cells: {name})",
            yes_no(o <= TARGET_OVERHEAD_US)
        ),
        None => println!("vaultd p50 overhead <= {TARGET_OVERHEAD_US:.0} µs: n/a (no vaultd result)"),
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores")
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let counts = Counts::from_env(bench_mode);
    println!("# certvault vault_ops benchmark");
    println!();
    let now = time::OffsetDateTime::now_utc();
    println!(
        "- date: {}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    println!("- machine: {}; load average at start: {}", machine(), load_average());
    println!(
        "- ops per cell: RSA {}, ECDSA {} ({}); warm-up {}/{} ops; {MSG_LEN}-byte messages, {}-byte OAEP plaintext",
        counts.rsa,
        counts.ec,
        counts.source,
        warmup(counts.rsa),
        warmup(counts.ec),
        PLAINTEXT.len()
    );
    println!(
        "- single-threaded sequential operations, each timed on its own; backends take turns in {ROUNDS} rounds per \
         cell; ops/s = ops / summed wall time of the cell's rounds"
    );

    let mut notes = Vec::new();

    // SoftHSM2 first: its configuration is an environment variable, set before any other thread exists.
    let softhsm = SoftHsm::start();
    let in_process = in_process_keys();
    // Lives until the end of `main`; dropping it (also when unwinding from a panic) kills the daemon.
    let daemon = Vaultd::start();
    let vaultd_keys = daemon.as_ref().map_err(Clone::clone).and_then(Vaultd::keys);

    let mut backends: Vec<(&str, &Keys)> = Vec::new();
    match &in_process {
        Ok(keys) => backends.push(("in-process", keys)),
        Err(e) => notes.push(format!("in-process: SKIPPED: {e}")),
    }
    match (&daemon, &vaultd_keys) {
        (Ok(d), Ok(keys)) => {
            backends.push(("vaultd", keys));
            notes.push(format!(
                "vaultd: {} on a fresh container (Argon2id m={} KiB t={}) in {}",
                d.binary.display(),
                BENCH_KDF.m_kib,
                BENCH_KDF.t,
                d.dir.path().display()
            ));
        }
        (_, Err(e)) => notes.push(format!("vaultd: SKIPPED: {e}")),
        (Err(e), _) => notes.push(format!("vaultd: SKIPPED: {e}")),
    }
    match &softhsm {
        Ok(hsm) => backends.push(("softhsm2", &hsm.keys)),
        Err(e) => notes.push(format!("softhsm2: SKIPPED, column left out: {e}")),
    }

    // Rows grouped by backend, cells in table order.
    let mut by_backend: Vec<Vec<Row>> = backends.iter().map(|_| Vec::new()).collect();
    for (kind, op) in CELLS {
        let n = counts.ops(kind);
        eprintln!("  {} x{n} on each backend", op_name(kind, op));
        for (i, result) in run_cell(&backends, kind, op, n).into_iter().enumerate() {
            by_backend[i].push(Row { backend: backends[i].0.into(), kind, op, result, comparable: true });
        }
    }
    if let (Ok(d), Ok(_)) = (&daemon, &vaultd_keys) {
        let op = Op::Sign(SignAlg::RsaPkcs1Sha256);
        let n = counts.rsa;
        eprintln!("  vaultd: {} x{n} on each of {CONCURRENT_THREADS} client threads", op_name(KeyKind::Rsa2048, op));
        let handles: Result<Vec<SharedKey>, String> =
            (0..CONCURRENT_THREADS).map(|_| d.client().and_then(|c| d.handles(&c)).map(|k| k.rsa)).collect();
        let result = handles.and_then(|h| run_concurrent(h, op, n));
        let row = Row {
            backend: format!("vaultd x{CONCURRENT_THREADS} threads"),
            kind: KeyKind::Rsa2048,
            op,
            result,
            comparable: false,
        };
        let at = backends.iter().position(|(name, _)| *name == "vaultd").map_or(by_backend.len(), |i| i + 1);
        by_backend.insert(at, vec![row]);
    }
    if let Ok(hsm) = &softhsm {
        notes.push(format!(
            "softhsm2: {} via the PKCS#11 backend{}",
            hsm.version,
            if hsm.rsa.oaep_sha256_uses_fallback() {
                "; this SoftHSM2 refuses OAEP with SHA-256, so that cell ran raw RSA (CKM_RSA_X_509) on the token \
                 plus OAEP decoding in software"
            } else {
                ""
            }
        ));
    }
    let rows: Vec<Row> = by_backend.into_iter().flatten().collect();

    println!();
    print_table(&rows);
    println!();
    for note in &notes {
        println!("- {note}");
    }
    println!();
    println!("- load average at end: {}", load_average());
    println!();
    print_targets(&rows);
    let failed = rows.iter().filter(|r| r.result.is_err()).count();
    if failed > 0 {
        println!("- {failed} cell(s) FAILED; their figures are left out");
    }
}
