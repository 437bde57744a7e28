//! A slow vault (a USB token, a TPM, a remote HSM) must never stall other channels: every vault call of the server
//! runs off the async workers. The server here runs on a single async worker and its key takes 400 ms per
//! operation; while one client's OpenSecureChannel waits for the vault, an established channel keeps being served.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use certvault::{DecryptAlg, KeyInfo, SharedKey, SignAlg, VaultKey};
use certvault_opcua::channel::policy::{SecurityMode, SecurityPolicy};
use certvault_opcua::client::{Client, ClientOptions};
use certvault_opcua::server::ServerBuilder;
use certvault_tests::{identity, init_tracing, soft_key, STEP_TIMEOUT};
use zeroize::Zeroizing;

const SERVER_URI: &str = "urn:certvault:test:slow-server";
const CLIENT_URI: &str = "urn:certvault:test:client";
const DELAY: Duration = Duration::from_millis(400);

/// Delegates to a software key after sleeping, like a token at the end of a slow bus.
#[derive(Debug)]
struct SlowKey {
    inner: SharedKey,
    calls: AtomicUsize,
}

impl VaultKey for SlowKey {
    fn info(&self) -> &KeyInfo {
        self.inner.info()
    }
    fn sign(&self, alg: SignAlg, msg: &[u8]) -> certvault::Result<Vec<u8>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(DELAY);
        self.inner.sign(alg, msg)
    }
    fn decrypt(&self, alg: DecryptAlg, ct: &[u8]) -> certvault::Result<Zeroizing<Vec<u8>>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(DELAY);
        self.inner.decrypt(alg, ct)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_slow_vault_does_not_stall_other_channels() {
    init_tracing();
    let slow = Arc::new(SlowKey { inner: soft_key(2048, "server"), calls: AtomicUsize::new(0) });
    let key: SharedKey = slow.clone();
    let cert = certvault_tests::self_signed(&key, "server", SERVER_URI);
    let server = ServerBuilder::new("opc.tcp://127.0.0.1:0/")
        .application_uri(SERVER_URI)
        .identity(key, cert)
        .expect("identity")
        .secure_endpoints()
        .accept_any_certificate()
        .start()
        .await
        .expect("server");
    let endpoint = server
        .endpoints()
        .iter()
        .find(|e| {
            e.security_policy_uri.as_ref() == SecurityPolicy::Basic256Sha256.uri()
                && e.security_mode == SecurityMode::SignAndEncrypt.to_wire()
        })
        .expect("endpoint")
        .clone();
    let options = {
        let mut o = ClientOptions::for_endpoint(&endpoint).expect("options");
        o.identity = Some(identity(soft_key(2048, "client"), "client", CLIENT_URI));
        o
    };

    let first = tokio::time::timeout(STEP_TIMEOUT, Client::connect_with(server.endpoint_url(), options.clone()))
        .await
        .expect("first connect in time")
        .expect("first connect");
    let opens_before = slow.calls.load(Ordering::SeqCst);
    assert!(opens_before > 0, "opening a channel used the vault");

    let url = server.endpoint_url().to_string();
    let started = Instant::now();
    let second = tokio::spawn(async move {
        let c = Client::connect_with(&url, options).await.expect("second connect");
        (c, started.elapsed())
    });
    // Give the second OpenSecureChannel time to reach the vault.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut served = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let endpoints = first.get_endpoints().await.expect("served while the vault is busy");
        assert_eq!(endpoints.len(), 6);
        served.push(t.elapsed());
    }
    let served_all_by = started.elapsed();
    let (second, second_open) = second.await.expect("second task");
    assert!(slow.calls.load(Ordering::SeqCst) > opens_before, "the second open used the slow vault");
    assert!(
        served_all_by < second_open,
        "ten requests on the open channel ({served_all_by:?}) finished before the slow open ({second_open:?}); \
         each took {served:?}"
    );
    second.close().await.expect("close");
    first.close().await.expect("close");
    server.shutdown().await;
}
