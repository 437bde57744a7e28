//! The proof behind "used, never read": a client process signs and runs TLS handshakes with a key held by vaultd,
//! and a scan of its whole memory finds none of the key's primes, while the same scan of vaultd finds them (so the
//! scan would have caught a leak).
//!
//! The client is this test binary run again with `KEYS_INSIDE_CHILD` set, so it is a real, separate process.

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::process::{Command, Stdio};

use certvault::container::{Container, PinRole};
use certvault::{DaemonClient, KeyAlgorithm, KeyPolicy, KeySelector, KeyStore, SignAlg};
use common::vaultd::{Vaultd, PIN};
use rsa::traits::PrivateKeyParts;

const CHILD_ENV: &str = "KEYS_INSIDE_CHILD";
const HANDSHAKES: usize = 5;
const SIGNATURES: usize = 20;

/// Both byte orders of a number: big-endian as in DER, little-endian as in bignum limbs.
fn patterns(be: &[u8]) -> [Vec<u8>; 2] {
    let be: Vec<u8> = be.iter().copied().skip_while(|&b| b == 0).collect();
    let le: Vec<u8> = be.iter().rev().copied().collect();
    [be, le]
}

/// Searches every readable mapping of `pid` for any of `needles`.
fn memory_contains(pid: u32, needles: &[Vec<u8>]) -> std::io::Result<bool> {
    let maps = BufReader::new(File::open(format!("/proc/{pid}/maps"))?);
    let mut mem = File::open(format!("/proc/{pid}/mem"))?;
    let mut scanned = 0usize;
    for line in maps.lines() {
        let line = line?;
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else { continue };
        if !perms.starts_with('r') || line.contains("[vvar") || line.contains("[vsyscall]") {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16)) else { continue };
        let mut buf = vec![0u8; (end - start) as usize];
        if mem.seek(SeekFrom::Start(start)).is_err() || mem.read_exact(&mut buf).is_err() {
            continue; // guard pages and the like
        }
        scanned += buf.len();
        for n in needles {
            if buf.windows(n.len()).any(|w| w[0] == n[0] && w == n.as_slice()) {
                return Ok(true);
            }
        }
    }
    assert!(scanned > 1 << 20, "scanned only {scanned} bytes of {pid}: the scan is not working");
    Ok(false)
}

#[test]
fn the_client_process_never_holds_the_private_key() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return; // in the child, the other test function does the work
    }
    let v = Vaultd::start("CV-SCAN");
    let c = v.client();
    c.generate("srv", KeyAlgorithm::Rsa { bits: 2048 }, KeyPolicy::default()).unwrap();

    // The test knows the PIN, so it can read the primes offline (test-only code; there is no export operation).
    let opened = Container::open(&v.container, PIN, PinRole::User).unwrap().unwrap();
    let stored = opened.body.keys.iter().find(|k| k.label == "srv").unwrap();
    let private = <rsa::PrivateKey as rsa::pkcs8::DecodePrivateKey>::from_pkcs8_der(stored.pkcs8.expose()).unwrap();
    let mut needles = Vec::new();
    for prime in private.primes() {
        needles.extend(patterns(&prime.to_be_bytes()));
    }
    drop(opened);
    assert_eq!(needles.len(), 4);

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_uses_the_daemon_key", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, "1")
        .env("KEYS_INSIDE_SOCKET", &v.socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the child ended before it was ready");
        if line.contains("READY") {
            break;
        }
    }
    let child_pid = child.id();
    let in_client = memory_contains(child_pid, &needles);
    let in_daemon = memory_contains(v.pid().unwrap(), &needles);
    // Release the child, then judge, so a failing assertion leaves no process behind.
    let _ = child.stdin.take().unwrap().write_all(b"done\n");
    let status = child.wait().unwrap();
    assert!(status.success(), "the child's signing and TLS work failed");
    assert!(in_daemon.unwrap(), "the scan must find the primes in vaultd, or it proves nothing");
    assert!(!in_client.unwrap(), "the client process held the private key's primes");

    let records = c.audit(1, 10_000).unwrap();
    let signs = records.iter().filter(|r| r.op == "sign" && r.ok && r.key.as_deref() == Some("srv")).count();
    assert_eq!(signs, SIGNATURES + HANDSHAKES, "the audit log counted every signature the child asked for");
}

#[test]
fn child_uses_the_daemon_key() {
    let Some(socket) = std::env::var_os("KEYS_INSIDE_SOCKET") else { return };
    let client = DaemonClient::connect(socket, None).unwrap();
    client.login(PIN).unwrap();
    let key = client.key(&KeySelector::Label("srv".into())).unwrap();
    for _ in 0..SIGNATURES {
        key.sign(SignAlg::RsaPssSha256, b"opc ua chunk").unwrap();
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let pki = common::TestPki::new(KeyAlgorithm::EcP256);
        common::run_mtls(
            &pki,
            common::MtlsCase {
                version: &rustls::version::TLS13,
                server_key: key.clone(),
                client_key: common::soft_key(KeyAlgorithm::EcP256, "client"),
                handshakes: HANDSHAKES,
            },
        )
        .await;
    });
    println!("READY");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}
