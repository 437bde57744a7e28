//! Our client against our server over real sockets, with the server key in a real vaultd.

use std::sync::Arc;
use std::time::Duration;

use certvault_opcua::channel::policy::{SecurityMode, SecurityPolicy};
use certvault_opcua::client::{Client, ClientOptions};
use certvault_opcua::pki::PkiStore;
use certvault_opcua::server::{Server, ServerBuilder};
use certvault_tests::{identity, init_tracing, matrix_cases, soft_key, Vaultd, STEP_TIMEOUT};

const SERVER_URI: &str = "urn:certvault:test:server";
const CLIENT_URI: &str = "urn:certvault:test:client";

async fn server_with_vault_key(vaultd: &Vaultd, min_lifetime_ms: u32, pki: Option<Arc<PkiStore>>) -> Server {
    let key = vaultd.generate_rsa("opcua-server", 2048);
    let cert = certvault_tests::self_signed(&key, "server", SERVER_URI);
    let builder = ServerBuilder::new("opc.tcp://127.0.0.1:0/")
        .application_uri(SERVER_URI)
        .product_uri("urn:certvault:test")
        .application_name("certvault test server")
        .identity(key, cert)
        .expect("server identity")
        .secure_endpoints()
        .allow_security_none()
        .token_lifetime_ms(min_lifetime_ms, 3_600_000);
    let builder = match pki {
        Some(store) => builder.pki(store),
        None => builder.accept_any_certificate(),
    };
    builder.start().await.expect("server starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_endpoints_and_find_servers_over_every_policy_and_mode_with_the_server_key_in_vaultd() {
    init_tracing();
    let vaultd = Vaultd::start(env!("CARGO_BIN_EXE_tests-vaultd"));
    let client_identity = identity(soft_key(2048, "client"), "client", CLIENT_URI);
    // Trust both ways through PKI stores, as an operator sets it up: each side's certificate in the other's trusted/.
    let dirs = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let server_pki = Arc::new(PkiStore::create_or_open(dirs.0.path()).expect("server pki"));
    let client_pki = Arc::new(PkiStore::create_or_open(dirs.1.path()).expect("client pki"));
    server_pki.trust(client_identity.certificate()).expect("trust the client");
    let server = server_with_vault_key(&vaultd, 10_000, Some(server_pki)).await;
    let server_cert = server.endpoints()[0].server_certificate.as_ref().to_vec();
    client_pki.trust(&server_cert).expect("trust the server");

    for (policy, mode) in matrix_cases() {
        let secured = !policy.is_none();
        let client = tokio::time::timeout(
            STEP_TIMEOUT,
            Client::connect_with(server.endpoint_url(), {
                let endpoint = server
                    .endpoints()
                    .iter()
                    .find(|e| e.security_policy_uri.as_ref() == policy.uri() && e.security_mode == mode.to_wire())
                    .expect("the endpoint");
                let mut options = ClientOptions::for_endpoint(endpoint).expect("options");
                options.identity = secured.then(|| client_identity.clone());
                options.pki = Some(client_pki.clone());
                options
            }),
        )
        .await
        .expect("connect in time")
        .unwrap_or_else(|e| panic!("{policy} {mode:?}: connect: {e}"));
        let endpoints = client.get_endpoints().await.unwrap_or_else(|e| panic!("{policy} {mode:?}: {e}"));
        assert_eq!(endpoints.len(), 7, "None and three policies x two modes");
        assert!(endpoints.windows(2).all(|w| w[0].security_level >= w[1].security_level), "strongest first");
        assert!(endpoints.iter().all(|e| e.endpoint_url.as_ref() == server.endpoint_url()));
        assert!(endpoints
            .iter()
            .any(|e| e.security_policy_uri.as_ref() == policy.uri() && e.security_mode == mode.to_wire()));
        let servers = client.find_servers().await.expect("FindServers");
        assert_eq!(servers.len(), 1);
        assert_eq!(servers[0].application_uri.as_ref(), SERVER_URI);
        client.close().await.expect("close");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_renews_at_75_percent_of_a_short_token_lifetime() {
    init_tracing();
    let vaultd = Vaultd::start(env!("CARGO_BIN_EXE_tests-vaultd"));
    let server = server_with_vault_key(&vaultd, 1_000, None).await;
    let server_cert = server.endpoints()[0].server_certificate.as_ref().to_vec();
    // Both keys in the vault this time.
    let client_identity = identity(vaultd.generate_rsa("opcua-client", 2048), "client", CLIENT_URI);
    let mut options = ClientOptions::new(SecurityPolicy::Aes256Sha256RsaPss, SecurityMode::SignAndEncrypt);
    options.identity = Some(client_identity);
    options.server_certificate = Some(server_cert);
    options.requested_lifetime = Duration::from_millis(1_000);
    let client = Client::connect_with(server.endpoint_url(), options).await.expect("connect");
    let first = client.channel_state();
    // Renewals fall due at 750 ms; keep talking across several of them, so the old and new tokens both carry traffic.
    let until = tokio::time::Instant::now() + Duration::from_millis(3_200);
    while tokio::time::Instant::now() < until {
        client.get_endpoints().await.expect("GetEndpoints across renewals");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let state = client.channel_state();
    assert!(state.open);
    assert_eq!(state.secure_channel_id, first.secure_channel_id);
    assert!(state.renewals >= 3, "expected at least 3 renewals in 3.2 s of 1 s tokens, saw {}", state.renewals);
    assert_eq!(state.token_id, first.token_id + state.renewals);
    client.close().await.expect("close");
    server.shutdown().await;
}
