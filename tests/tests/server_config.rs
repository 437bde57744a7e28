//! A server started from its TOML configuration file: the key is opened by its vaultd URI, the certificate, trust
//! stores and users file by path; our client then logs in as the configured operator.

use certvault_opcua::channel::policy::{SecurityMode, SecurityPolicy};
use certvault_opcua::client::{ClientOptions, EndpointFilter, Session, SessionOptions, UserIdentity};
use certvault_opcua::server::config::ConfigFile;
use certvault_tests::machine::cheap_hash;
use certvault_tests::{identity, init_tracing, self_signed, Vaultd};
use opcua_types::{StatusCode, VariableId, Variant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_runs_from_its_configuration_file() {
    init_tracing();
    let vaultd = Vaultd::start(env!("CARGO_BIN_EXE_tests-vaultd"));
    let key = vaultd.generate_rsa("machine-a", 2048);
    let cert = self_signed(&key, "machine-a", "urn:test:machine-a");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("machine-a.der"), &cert).expect("cert");
    std::fs::write(
        dir.path().join("users.toml"),
        format!("[[user]]\nname = \"op\"\npassword = \"{}\"\nrole = \"operator\"\n", cheap_hash("pw")),
    )
    .expect("users");
    let config = format!(
        r#"
[server]
endpoint_url = "opc.tcp://127.0.0.1:0/"
application_uri = "urn:test:machine-a"

[identity]
key = "{}"
certificate = "machine-a.der"

[security]
policies = ["Aes256_Sha256_RsaPss"]
modes = ["SignAndEncrypt"]
pki = "pki"

[users]
anonymous = false
file = "users.toml"
"#,
        vaultd.key_uri("machine-a")
    );
    let path = dir.path().join("machine-a.toml");
    std::fs::write(&path, config).expect("config");
    let builder = tokio::task::spawn_blocking(move || ConfigFile::load(&path)?.builder())
        .await
        .expect("join")
        .expect("configuration");
    let server = builder.start().await.expect("server");
    assert_eq!(server.endpoints().len(), 1, "exactly the configured endpoint");

    let client_key = vaultd.generate_rsa("client", 2048);
    let client = identity(client_key, "client", "urn:test:client");
    // The operator trusts the client the way the configuration says: a file in pki/trusted/certs.
    std::fs::write(dir.path().join("pki/trusted/certs/client.der"), client.certificate()).expect("trust");

    let connect = |user: UserIdentity| {
        // Discovery over an unsecured channel, then the configured endpoint.
        let mut channel = ClientOptions::new(SecurityPolicy::None, SecurityMode::None);
        channel.identity = Some(client.clone());
        let mut options = SessionOptions::new(channel);
        options.discovery = Some(EndpointFilter::secure());
        options.identity = user;
        options.application_uri = Some("urn:test:client".into());
        Session::connect(server.endpoint_url(), options)
    };
    let session = connect(UserIdentity::user_name("op", "pw")).await.expect("operator session");
    let time = session.read_value(&VariableId::Server_ServerStatus_CurrentTime.into()).await.expect("read");
    assert!(matches!(time, Variant::DateTime(_)), "{time:?}");
    session.close().await.expect("close");
    // anonymous = false in the file: refused.
    let err = connect(UserIdentity::Anonymous).await.expect_err("anonymous is off");
    assert!(
        matches!(err.status_code(), StatusCode::BadIdentityTokenRejected | StatusCode::BadIdentityTokenInvalid),
        "{err}"
    );
    server.shutdown().await;
}

/// A server without a None endpoint still answers GetEndpoints over an unsecured channel (clients discover that
/// way), but nothing else: CreateSession there is BadSecurityPolicyRejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsecured_channel_serves_discovery_only() {
    init_tracing();
    let vaultd = Vaultd::start(env!("CARGO_BIN_EXE_tests-vaultd"));
    let server = certvault_tests::machine::MachineServer::start(&vaultd, 16, |b| {
        let mut config = b.config().clone();
        config.endpoints.retain(|(p, _)| !p.is_none());
        config.allow_security_none = false;
        certvault_opcua::server::ServerBuilder::from_config(config)
    })
    .await;
    assert!(server.endpoints().iter().all(|e| e.security_policy_uri.as_ref() != SecurityPolicy::None.uri()));
    let client =
        certvault_opcua::client::connect(server.endpoint_url(), SecurityPolicy::None, SecurityMode::None, None, None)
            .await
            .expect("a None channel for discovery");
    assert_eq!(client.get_endpoints().await.expect("GetEndpoints").len(), 6);
    // The server itself refuses: a hand-made CreateSession over the None channel.
    let codec = certvault_opcua::service::BodyCodec::new();
    let request = opcua_types::CreateSessionRequest {
        request_header: opcua_types::RequestHeader::new(&opcua_types::NodeId::null(), &opcua_types::DateTime::now(), 1),
        session_name: "over None".into(),
        requested_session_timeout: 60_000.0,
        ..Default::default()
    };
    let body =
        codec.encode(opcua_types::ObjectId::CreateSessionRequest_Encoding_DefaultBinary, &request).expect("encode");
    let response = client.call(body).await.expect("a response");
    let err = codec
        .decode_response::<opcua_types::CreateSessionResponse>(
            opcua_types::ObjectId::CreateSessionResponse_Encoding_DefaultBinary,
            &response,
        )
        .expect_err("no session over None");
    assert_eq!(err.status_code(), StatusCode::BadSecurityPolicyRejected, "{err}");
    // The channel still serves discovery afterwards.
    assert_eq!(client.get_endpoints().await.expect("GetEndpoints").len(), 6);
}
