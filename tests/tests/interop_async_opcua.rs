//! Interop with async-opcua 0.19 as the peer, over real sockets: its client against our server (whose key is in a
//! real vaultd), and our client against its server. GetEndpoints over None and every policy x {Sign,
//! SignAndEncrypt}; each test prints its matrix and fails if any case failed.

use std::sync::Arc;

use certvault_opcua::channel::policy::SecurityPolicy;
use certvault_opcua::pki::PkiStore;
use certvault_opcua::server::ServerBuilder;
use certvault_tests::{identity, init_tracing, matrix_cases, Matrix, PeerPki, Vaultd, STEP_TIMEOUT};
use opcua::client::transport::TransportConfiguration;
use opcua::client::transport::{Connector, RequestRecv, SecureChannelState, TcpConnector, TcpTransport};
use opcua::types::{ByteString, EndpointDescription};

const OUR_SERVER_URI: &str = "urn:certvault:test:server";
const OUR_CLIENT_URI: &str = "urn:certvault:test:client";
const PEER_CLIENT_URI: &str = "urn:async-opcua:interop:client";
const PEER_SERVER_URI: &str = "urn:async-opcua:interop:server";

/// async-opcua's session-less GetEndpoints opens its channel with the connector's default endpoint; this connector
/// names the policy, mode and server certificate to use, so the discovery call runs over a secured channel.
struct SecuredEndpoint {
    inner: TcpConnector,
    endpoint: EndpointDescription,
}

impl Connector for SecuredEndpoint {
    type Transport = TcpTransport;

    async fn connect(
        &self,
        channel: Arc<SecureChannelState>,
        outgoing_recv: RequestRecv,
        config: TransportConfiguration,
    ) -> Result<TcpTransport, opcua::types::Error> {
        self.inner.connect(channel, outgoing_recv, config).await
    }

    fn default_endpoint(&self) -> EndpointDescription {
        self.endpoint.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_opcua_client_against_our_server_interop() {
    init_tracing();
    let vaultd = Vaultd::start(env!("CARGO_BIN_EXE_tests-vaultd"));
    let key = vaultd.generate_rsa("opcua-server", 2048);
    let cert = certvault_tests::self_signed(&key, "server", OUR_SERVER_URI);
    let pki = PeerPki::new("async-opcua client", PEER_CLIENT_URI);
    // Our server judges the peer with its PKI store, where the operator trusted the peer's certificate.
    let store_dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(PkiStore::create_or_open(store_dir.path()).expect("pki store"));
    store.trust(&pki.certificate).expect("trust the peer");
    let server = ServerBuilder::new("opc.tcp://127.0.0.1:0/")
        .application_uri(OUR_SERVER_URI)
        .identity(key, cert.clone())
        .expect("identity")
        .secure_endpoints()
        .allow_security_none()
        .pki(store)
        .start()
        .await
        .expect("server");

    let peer = pki
        .client_builder("async-opcua interop client", PEER_CLIENT_URI, "urn:async-opcua:interop")
        .client()
        .expect("async-opcua client");

    let mut matrix = Matrix::default();
    for (policy, mode) in matrix_cases() {
        let endpoint = EndpointDescription {
            endpoint_url: server.endpoint_url().into(),
            security_policy_uri: policy.uri().into(),
            security_mode: mode.to_wire(),
            server_certificate: if policy.is_none() { ByteString::null() } else { ByteString::from(cert.clone()) },
            ..Default::default()
        };
        let connector = SecuredEndpoint { inner: TcpConnector::new(server.endpoint_url()).expect("url"), endpoint };
        let outcome = match tokio::time::timeout(STEP_TIMEOUT, peer.get_endpoints(connector, &[], &[])).await {
            Ok(Ok(endpoints)) if endpoints.len() == 7 => Ok(format!("{} endpoints", endpoints.len())),
            Ok(Ok(endpoints)) => Err(format!("{} endpoints, expected 7", endpoints.len())),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        };
        matrix.record(policy, mode, "async-opcua client -> certvault server", outcome);
    }
    matrix.print("async-opcua 0.19 client -> certvault server (server key in vaultd): GetEndpoints");
    server.shutdown().await;
    assert!(matrix.failures().is_empty(), "failed cases: {:#?}", matrix.failures());
}

fn peer_policy(policy: SecurityPolicy) -> opcua::crypto::SecurityPolicy {
    opcua::crypto::SecurityPolicy::from_uri(policy.uri())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_against_async_opcua_server_interop() {
    init_tracing();
    let pki = PeerPki::new("async-opcua server", PEER_SERVER_URI);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let user_tokens = [opcua::server::ANONYMOUS_USER_TOKEN_ID.to_owned()];
    let mut builder =
        pki.server_builder("async-opcua interop server", PEER_SERVER_URI, "urn:async-opcua:interop", port);
    for (i, (policy, mode)) in matrix_cases().into_iter().enumerate() {
        builder = builder.add_endpoint(
            format!("e{i}"),
            opcua::server::ServerEndpoint::new("/", peer_policy(policy), mode.to_wire(), &user_tokens),
        );
    }
    let (peer_server, handle) = builder.build().expect("async-opcua server");
    let task = tokio::spawn(peer_server.run_with(listener));
    let url = format!("opc.tcp://127.0.0.1:{port}/");

    // Our client's key in a real vaultd as well.
    let vaultd = Vaultd::start(env!("CARGO_BIN_EXE_tests-vaultd"));
    let client_identity = identity(vaultd.generate_rsa("opcua-client", 2048), "client", OUR_CLIENT_URI);

    let mut matrix = Matrix::default();
    for (policy, mode) in matrix_cases() {
        let secured = !policy.is_none();
        let run = async {
            let client = certvault_opcua::client::connect(
                &url,
                policy,
                mode,
                secured.then(|| client_identity.clone()),
                secured.then_some(pki.certificate.as_slice()),
            )
            .await?;
            let endpoints = client.get_endpoints().await?;
            let servers = client.find_servers().await?;
            client.close().await?;
            Ok::<_, certvault_opcua::Error>((endpoints.len(), servers.len()))
        };
        let outcome = match tokio::time::timeout(STEP_TIMEOUT, run).await {
            Ok(Ok((endpoints, servers))) if endpoints == 7 => Ok(format!("{endpoints} endpoints, {servers} server(s)")),
            Ok(Ok((endpoints, _))) => Err(format!("{endpoints} endpoints, expected 7")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        };
        matrix.record(policy, mode, "certvault client -> async-opcua server", outcome);
    }
    matrix.print("certvault client (key in vaultd) -> async-opcua 0.19 server: GetEndpoints + FindServers");
    handle.cancel();
    let _ = tokio::time::timeout(STEP_TIMEOUT, task).await;
    assert!(matrix.failures().is_empty(), "failed cases: {:#?}", matrix.failures());
}
