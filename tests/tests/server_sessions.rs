//! Sessions on our server with async-opcua's client as the peer: CreateSession (serverSignature from the vault),
//! ActivateSession with every user token kind, and the refusals.

use std::sync::Arc;

use certvault_opcua::pki::PkiStore;
use certvault_opcua::server::access::UserRole;
use certvault_opcua::server::{ServerBuilder, UserDatabase};
use certvault_tests::{init_tracing, matrix_cases, Matrix, PeerPki, Vaultd};
use opcua::client::IdentityToken;
use opcua::types::StatusCode;

const OUR_SERVER_URI: &str = "urn:certvault:test:server";
const PEER_CLIENT_URI: &str = "urn:async-opcua:interop:client";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_opcua_sessions_against_our_server_interop() {
    init_tracing();
    let vaultd = Vaultd::start(env!("CARGO_BIN_EXE_vaultd"));
    let key = vaultd.generate_rsa("opcua-server", 2048);
    let cert = certvault_tests::self_signed(&key, "server", OUR_SERVER_URI);
    let pki = PeerPki::new("async-opcua client", PEER_CLIENT_URI);
    let user = PeerPki::new("Line operator", "urn:user:operator");
    let store_dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(PkiStore::create_or_open(store_dir.path().join("app")).expect("pki store"));
    store.trust(&pki.certificate).expect("trust the peer");
    let user_store = Arc::new(PkiStore::create_or_open(store_dir.path().join("user")).expect("user pki"));
    user_store.trust(&user.certificate).expect("trust the user");
    let mut users = UserDatabase::empty();
    users.add_user("operator", "s3cret", UserRole::Operator).expect("user");
    users.map_certificate_common_name("Line operator", UserRole::Operator);
    let server = ServerBuilder::new("opc.tcp://127.0.0.1:0/")
        .application_uri(OUR_SERVER_URI)
        .identity(key, cert.clone())
        .expect("identity")
        .secure_endpoints()
        .allow_security_none()
        .pki(store)
        .users(users)
        .user_pki(user_store)
        .start()
        .await
        .expect("server");

    let mut peer = opcua::client::ClientBuilder::new()
        .application_name("async-opcua interop client")
        .application_uri(PEER_CLIENT_URI)
        .product_uri("urn:async-opcua:interop")
        .pki_dir(pki.path())
        .certificate_path(pki.path().join("own/cert.der"))
        .private_key_path(pki.path().join("private/private.pem"))
        .create_sample_keypair(false)
        .trust_server_certs(true)
        .session_retry_limit(0)
        .client()
        .expect("async-opcua client");

    let mut matrix = Matrix::default();
    for (policy, mode) in
        matrix_cases().into_iter().take(std::env::var("CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(99))
    {
        for (token_name, token) in [
            ("anonymous", IdentityToken::Anonymous),
            ("username", IdentityToken::new_user_name("operator", "s3cret")),
            (
                "x509",
                IdentityToken::new_x509_path(user.path().join("own/cert.der"), user.path().join("private/private.pem"))
                    .expect("user token"),
            ),
        ] {
            let endpoint = (server.endpoint_url(), policy.uri(), mode.to_wire());
            let run = async {
                let (session, event_loop) = peer.connect_to_matching_endpoint(endpoint, token).await?;
                let handle = event_loop.spawn();
                let connected = session.wait_for_connection().await;
                let _ = session.disconnect().await;
                handle.abort();
                Ok::<_, opcua::types::Error>(connected)
            };
            let outcome = match tokio::time::timeout(std::time::Duration::from_secs(10), run).await {
                Ok(Ok(true)) => Ok("session activated".to_owned()),
                Ok(Ok(false)) => Err("not connected".to_owned()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".into()),
            };
            matrix.record(policy, mode, &format!("async-opcua client -> certvault server, {token_name}"), outcome);
        }
    }
    matrix.print("async-opcua 0.19 client -> certvault server: CreateSession + ActivateSession");
    let _ = StatusCode::Good;
    server.shutdown().await;
    assert!(matrix.failures().is_empty(), "failed cases: {:#?}", matrix.failures());
}
