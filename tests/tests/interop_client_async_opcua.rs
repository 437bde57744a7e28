//! Our client's sessions and services against the async-opcua 0.19 server, over real sockets. Our application key
//! and the X.509 user's key live in a real vaultd; the peer's key is a file (it is not our product).
//!
//! The peer serves a small namespace: a writable Double `Setpoint`, an Int32 `Counter` that changes every 50 ms, and
//! a method `Add(Int32, Int32) -> Int32`, under the folder `Interop`. Every policy x mode x user token (anonymous,
//! user name, X.509) reads, writes, browses, calls and receives three data changes through a subscription stream;
//! then: endpoint discovery, a wrong password, a dropped connection and a restarted server with the subscription
//! stream continuing. Run with `--nocapture` to see the matrix.

use std::path::Path;
use std::time::Duration;

use certvault_opcua::channel::asymmetric::LocalIdentity;
use certvault_opcua::channel::policy::{DeprecatedPolicies, SecurityMode, SecurityPolicy};
use certvault_opcua::client::{
    ClientOptions, ConnectionState, DataChange, EndpointFilter, MonitoredItemSpec, ReconnectPolicy, Session,
    SessionOptions, UserIdentity,
};
use certvault_tests::client::{fast_subscription, next_changes, wait_state};
use certvault_tests::proxy::Proxy;
use certvault_tests::{identity, init_tracing, matrix_cases, self_signed, Matrix, PeerPki, Vaultd, STEP_TIMEOUT};
use opcua::server::address_space::{MethodBuilder, VariableBuilder};
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::memory::{simple_node_manager, SimpleNodeManager};
use opcua::server::{ServerEndpoint, ServerHandle, ServerUserToken, ANONYMOUS_USER_TOKEN_ID};
use opcua::types::{DataTypeId, DataValue, NodeId, QualifiedName, StatusCode, Variant};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const PEER_SERVER_URI: &str = "urn:async-opcua:interop:server";
const OUR_CLIENT_URI: &str = "urn:certvault:test:client";
const NAMESPACE: &str = "urn:certvault:interop:ns";
const USER: &str = "operator";
const PASSWORD: &str = "correct horse battery";

/// The async-opcua server and the task that keeps `Counter` changing; both stop on drop.
struct PeerServer {
    handle: ServerHandle,
    task: Option<JoinHandle<()>>,
    ticker: JoinHandle<()>,
    port: u16,
    ns: u16,
}

impl PeerServer {
    async fn start(pki: &PeerPki, user_cert: &Path, listener: TcpListener) -> PeerServer {
        let port = listener.local_addr().expect("addr").port();
        let tokens = [ANONYMOUS_USER_TOKEN_ID.to_owned(), "user".to_owned(), "x509".to_owned()];
        let mut builder = pki
            .server_builder("async-opcua interop server", PEER_SERVER_URI, "urn:async-opcua:interop", port)
            .add_user_token("user", ServerUserToken::user_pass(USER, PASSWORD))
            .add_user_token("x509", ServerUserToken::x509("x509-user", user_cert))
            .with_node_manager(simple_node_manager(
                NamespaceMetadata { namespace_uri: NAMESPACE.to_owned(), ..Default::default() },
                "interop",
            ));
        for (i, (policy, mode)) in matrix_cases().into_iter().enumerate() {
            builder = builder
                .add_endpoint(format!("e{i}"), ServerEndpoint::new("/", peer_policy(policy), mode.to_wire(), &tokens));
        }
        let (server, handle) = builder.build().expect("async-opcua server");
        let ns = handle.get_namespace_index(NAMESPACE).expect("namespace");
        let manager = handle.node_managers().get_of_type::<SimpleNodeManager>().expect("simple node manager");
        {
            let mut space = manager.address_space().write();
            let folder = NodeId::new(ns, "Interop");
            space.add_folder(&folder, QualifiedName::new(ns, "Interop"), "Interop", &NodeId::objects_folder_id());
            VariableBuilder::new(&NodeId::new(ns, "Setpoint"), QualifiedName::new(ns, "Setpoint"), "Setpoint")
                .data_type(DataTypeId::Double)
                .value(0.0f64)
                .writable()
                .organized_by(&folder)
                .insert(&mut *space);
            VariableBuilder::new(&NodeId::new(ns, "Counter"), QualifiedName::new(ns, "Counter"), "Counter")
                .data_type(DataTypeId::Int32)
                .value(0i32)
                .organized_by(&folder)
                .insert(&mut *space);
            MethodBuilder::new(&NodeId::new(ns, "Add"), QualifiedName::new(ns, "Add"), "Add")
                .component_of(folder.clone())
                .input_args(
                    &mut *space,
                    &NodeId::new(ns, "Add.In"),
                    &[("a", DataTypeId::Int32).into(), ("b", DataTypeId::Int32).into()],
                )
                .output_args(&mut *space, &NodeId::new(ns, "Add.Out"), &[("sum", DataTypeId::Int32).into()])
                .executable(true)
                .user_executable(true)
                .insert(&mut *space);
        }
        manager.inner().add_method_callback(NodeId::new(ns, "Add"), |args| match args {
            [Variant::Int32(a), Variant::Int32(b)] => Ok(vec![Variant::Int32(a.wrapping_add(*b))]),
            _ => Err(StatusCode::BadInvalidArgument),
        });
        let subscriptions = handle.subscriptions().clone();
        let counter = NodeId::new(ns, "Counter");
        let ticker = tokio::spawn(async move {
            let mut i = 0i32;
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                i = i.wrapping_add(1);
                let _ = manager.set_value(&subscriptions, &counter, None, DataValue::new_now(i));
            }
        });
        let task = tokio::spawn(async move {
            let _ = server.run_with(listener).await;
        });
        PeerServer { handle, task: Some(task), ticker, port, ns }
    }

    fn url(&self) -> String {
        format!("opc.tcp://127.0.0.1:{}/", self.port)
    }

    fn node(&self, name: &str) -> NodeId {
        NodeId::new(self.ns, name)
    }

    async fn stop(mut self) {
        self.handle.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(STEP_TIMEOUT, task).await;
        }
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        self.ticker.abort();
        self.handle.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn peer_policy(policy: SecurityPolicy) -> opcua::crypto::SecurityPolicy {
    opcua::crypto::SecurityPolicy::from_uri(policy.uri())
}

/// Everything a test needs: the peer's PKI, vaultd with our application and user keys, the user's certificate.
struct Fixture {
    pki: PeerPki,
    _vaultd: Vaultd,
    app: LocalIdentity,
    user_certificate: Vec<u8>,
    user_key: certvault::SharedKey,
    user_cert_dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let pki = PeerPki::new("async-opcua server", PEER_SERVER_URI);
        let vaultd = Vaultd::start(env!("CARGO_BIN_EXE_tests-vaultd"));
        let app = identity(vaultd.generate_rsa("opcua-client", 2048), "client", OUR_CLIENT_URI);
        let user_key = vaultd.generate_rsa("opcua-user", 2048);
        let user_certificate = self_signed(&user_key, "x509-user", "urn:certvault:test:user");
        let user_cert_dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(user_cert_dir.path().join("user.der"), &user_certificate).expect("user cert");
        Fixture { pki, _vaultd: vaultd, app, user_certificate, user_key, user_cert_dir }
    }

    fn user_cert_path(&self) -> std::path::PathBuf {
        self.user_cert_dir.path().join("user.der")
    }

    async fn server(&self) -> PeerServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        PeerServer::start(&self.pki, &self.user_cert_path(), listener).await
    }

    fn options(&self, policy: SecurityPolicy, mode: SecurityMode, user: UserIdentity) -> SessionOptions {
        let mut channel = ClientOptions::new(policy, mode);
        channel.timeout = Duration::from_secs(20);
        if !policy.is_none() {
            channel.identity = Some(self.app.clone());
            channel.server_certificate = Some(self.pki.certificate.clone());
        }
        let mut options = SessionOptions::new(channel);
        options.identity = user;
        options.application_uri = Some(OUR_CLIENT_URI.into());
        // async-opcua's X.509 UserTokenPolicy names Basic128Rsa15: the user key signs with RSA-SHA1.
        options.deprecated_user_token_policies = DeprecatedPolicies::Allow;
        options.allow_unencrypted_password = policy.is_none();
        options.reconnect = ReconnectPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_attempts: None,
        };
        options
    }

    fn users(&self) -> Vec<(&'static str, UserIdentity)> {
        vec![
            ("anonymous", UserIdentity::Anonymous),
            ("username", UserIdentity::user_name(USER, PASSWORD)),
            ("x509", UserIdentity::x509(self.user_certificate.clone(), self.user_key.clone())),
        ]
    }
}

fn counter_value(change: &DataChange) -> Option<i32> {
    match change.value.value {
        Some(Variant::Int32(v)) => Some(v),
        _ => None,
    }
}

/// One session: read, write + read back, browse, call, three data changes, close.
async fn exercise(server: &PeerServer, options: SessionOptions, seed: f64) -> Result<String, String> {
    let e = |what: &'static str| move |err: certvault_opcua::Error| format!("{what}: {err} ({})", err.status_code());
    let session = Session::connect(&server.url(), options).await.map_err(e("connect"))?;
    let time = session
        .read_value(&opcua::types::VariableId::Server_ServerStatus_CurrentTime.into())
        .await
        .map_err(e("read CurrentTime"))?;
    if !matches!(time, Variant::DateTime(_)) {
        return Err(format!("CurrentTime is {time:?}"));
    }
    session.write_value(&server.node("Setpoint"), seed).await.map_err(e("write"))?;
    let back = session.read_value(&server.node("Setpoint")).await.map_err(e("read back"))?;
    if back != Variant::Double(seed) {
        return Err(format!("read back {back:?}, wrote {seed}"));
    }
    let children = session.browse_children(&server.node("Interop")).await.map_err(e("browse"))?;
    let mut names: Vec<String> = children.iter().map(|r| r.browse_name.name.as_ref().to_owned()).collect();
    names.sort();
    if names != ["Add", "Counter", "Setpoint"] {
        return Err(format!("browse found {names:?}"));
    }
    let sum = session
        .call_method(&server.node("Interop"), &server.node("Add"), vec![Variant::Int32(40), Variant::Int32(2)])
        .await
        .map_err(e("call"))?;
    if sum != [Variant::Int32(42)] {
        return Err(format!("Add(40, 2) = {sum:?}"));
    }
    let mut stream = session
        .subscribe(fast_subscription(), vec![MonitoredItemSpec::value(server.node("Counter"))])
        .await
        .map_err(e("subscribe"))?;
    let changes = next_changes(&mut stream, 3, Duration::from_secs(10)).await?;
    let values: Vec<i32> = changes.iter().filter_map(counter_value).collect();
    drop(stream);
    session.close().await.map_err(e("close"))?;
    Ok(format!("r/w/browse/call ok, changes {values:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sessions_against_async_opcua_server_interop() {
    init_tracing();
    let fixture = Fixture::new();
    let server = fixture.server().await;
    let mut matrix = Matrix::default();
    let mut seed = 1.5;
    for (policy, mode) in matrix_cases() {
        for (token, user) in fixture.users() {
            seed += 1.0;
            let options = fixture.options(policy, mode, user);
            let outcome = match tokio::time::timeout(STEP_TIMEOUT, exercise(&server, options, seed)).await {
                Ok(outcome) => outcome,
                Err(_) => Err("timed out".into()),
            };
            matrix.record(policy, mode, &format!("certvault -> async-opcua, {token}"), outcome);
        }
    }
    matrix.print("certvault client (app + user keys in vaultd) -> async-opcua 0.19 server: session services");
    server.stop().await;
    assert!(matrix.failures().is_empty(), "failed cases: {:#?}", matrix.failures());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_discovery_picks_the_strongest_endpoint_interop() {
    init_tracing();
    let fixture = Fixture::new();
    let server = fixture.server().await;
    // Discovery over None; our certificate goes to the chosen endpoint.
    let mut options =
        fixture.options(SecurityPolicy::None, SecurityMode::None, UserIdentity::user_name(USER, PASSWORD));
    options.channel.identity = Some(fixture.app.clone());
    options.allow_unencrypted_password = false;
    options.discovery = Some(EndpointFilter::secure());
    let session = Session::connect(&server.url(), options).await.expect("discover and connect");
    let endpoint = session.endpoint().clone();
    println!(
        "\ndiscovery chose {} {:?} (securityLevel {})",
        endpoint.security_policy_uri.as_ref(),
        endpoint.security_mode,
        endpoint.security_level
    );
    assert_eq!(endpoint.security_mode, opcua::types::MessageSecurityMode::SignAndEncrypt);
    assert_ne!(session.security_policy(), SecurityPolicy::None);
    session.write_value(&server.node("Setpoint"), 7.0f64).await.expect("write over the chosen endpoint");
    session.close().await.expect("close");

    // Only Sign allowed with one policy: the filter is obeyed.
    let mut options = fixture.options(SecurityPolicy::None, SecurityMode::None, UserIdentity::Anonymous);
    options.channel.identity = Some(fixture.app.clone());
    options.discovery = Some(EndpointFilter::exactly(SecurityPolicy::Aes128Sha256RsaOaep, SecurityMode::Sign));
    let session = Session::connect(&server.url(), options).await.expect("discover and connect");
    assert_eq!(session.security_policy(), SecurityPolicy::Aes128Sha256RsaOaep);
    session.close().await.expect("close");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_wrong_password_interop() {
    init_tracing();
    let fixture = Fixture::new();
    let server = fixture.server().await;
    let mut rows = Matrix::default();
    for (policy, mode) in
        [(SecurityPolicy::Basic256Sha256, SecurityMode::SignAndEncrypt), (SecurityPolicy::None, SecurityMode::None)]
    {
        let options = fixture.options(policy, mode, UserIdentity::user_name(USER, "wrong"));
        let err = Session::connect(&server.url(), options).await.expect_err("a wrong password is refused");
        // async-opcua 0.19 answers a wrong password (and an unknown user) with BadIdentityTokenRejected.
        let outcome = if err.status_code() == StatusCode::BadIdentityTokenRejected {
            Ok(format!("refused: {}", err.status_code()))
        } else {
            Err(format!("unexpected {err} ({})", err.status_code()))
        };
        rows.record(policy, mode, "wrong password", outcome);
    }
    rows.print("certvault client -> async-opcua 0.19 server: wrong password");
    server.stop().await;
    assert!(rows.failures().is_empty(), "failed cases: {:#?}", rows.failures());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reconnect_keeps_the_subscription_interop() {
    init_tracing();
    let fixture = Fixture::new();
    let server = fixture.server().await;
    let proxy = Proxy::start(format!("127.0.0.1:{}", server.port).parse().expect("addr")).await;
    let mut report = Matrix::default();
    let policy = SecurityPolicy::Aes256Sha256RsaPss;
    let mode = SecurityMode::SignAndEncrypt;
    let options =
        fixture.options(policy, mode, UserIdentity::x509(fixture.user_certificate.clone(), fixture.user_key.clone()));
    let session = Session::connect(&proxy.url(), options).await.expect("connect through the proxy");
    let first_session = session.session_id();
    let mut stream = session
        .subscribe(fast_subscription(), vec![MonitoredItemSpec::value(server.node("Counter"))])
        .await
        .expect("subscribe");
    let before = next_changes(&mut stream, 3, Duration::from_secs(10)).await.expect("changes before the cut");

    // 1. The connection dies; the server keeps the session: a new channel, ActivateSession, same subscription.
    proxy.cut();
    let state = wait_state(&session, |s| matches!(s, ConnectionState::Reconnecting { .. })).await;
    println!("\nafter the cut: {state:?}");
    wait_state(&session, |s| *s == ConnectionState::Connected).await;
    let after = next_changes(&mut stream, 3, Duration::from_secs(15)).await;
    let same_session = session.session_id() == first_session;
    report.record(
        policy,
        mode,
        "connection cut",
        match after {
            Ok(changes) if same_session => Ok(format!(
                "re-activated the same session; stream went on: {:?} -> {:?}",
                before.iter().filter_map(counter_value).collect::<Vec<_>>(),
                changes.iter().filter_map(counter_value).collect::<Vec<_>>()
            )),
            Ok(_) => Err("a new session was created although the server kept the old one".into()),
            Err(e) => Err(e),
        },
    );
    session.write_value(&server.node("Setpoint"), 3.25f64).await.expect("services work after the reconnect");

    // 2. The server restarts (new process state, same certificate): the session is gone, a new one is created and
    //    the subscription made again; the same stream goes on.
    let restarted = fixture.server().await;
    proxy.switch_to(format!("127.0.0.1:{}", restarted.port).parse().expect("addr"));
    server.stop().await;
    proxy.cut();
    wait_state(&session, |s| matches!(s, ConnectionState::Reconnecting { .. })).await;
    wait_state(&session, |s| *s == ConnectionState::Connected).await;
    let after_restart = next_changes(&mut stream, 3, Duration::from_secs(15)).await;
    let new_session = session.session_id() != first_session;
    report.record(
        policy,
        mode,
        "server restarted",
        match after_restart {
            Ok(changes) if new_session => Ok(format!(
                "new session, subscription recreated; stream went on: {:?}",
                changes.iter().filter_map(counter_value).collect::<Vec<_>>()
            )),
            Ok(_) => Err("the old session id survived a server restart".into()),
            Err(e) => Err(e),
        },
    );
    report.print("certvault client -> async-opcua 0.19 server through a proxy: reconnect");
    drop(stream);
    let _ = session.close().await;
    restarted.stop().await;
    assert!(report.failures().is_empty(), "failed cases: {:#?}", report.failures());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_keep_alive_interop() {
    init_tracing();
    let fixture = Fixture::new();
    let server = fixture.server().await;
    let mut report = Matrix::default();
    let policy = SecurityPolicy::Basic256Sha256;
    let mode = SecurityMode::SignAndEncrypt;
    for keep_alive in [true, false] {
        let mut options = fixture.options(policy, mode, UserIdentity::Anonymous);
        options.session_timeout = Duration::from_millis(1500);
        if !keep_alive {
            options.keep_alive_interval = Some(Duration::from_secs(3600));
        }
        let session = Session::connect(&server.url(), options).await.expect("connect");
        let first = session.session_id();
        let revised = session.revised_timeout();
        // Idle for more than twice the session timeout.
        tokio::time::sleep(revised * 3).await;
        let read = session.read_value(&server.node("Setpoint")).await;
        let outcome = match (keep_alive, &read) {
            (true, Ok(_)) if session.session_id() == first => {
                Ok(format!("idle {:?} with a {revised:?} session: still the same session", revised * 3))
            }
            (false, Err(e)) if e.status_code() == StatusCode::BadSessionIdInvalid => {
                // The client notices, creates a new session and carries on.
                wait_state(&session, |s| *s == ConnectionState::Connected).await;
                match session.read_value(&server.node("Setpoint")).await {
                    Ok(_) if session.session_id() != first => Ok(format!(
                        "without keep-alive the server dropped the session ({}); a new one took over",
                        e.status_code()
                    )),
                    other => Err(format!("no recovery after the lost session: {other:?}")),
                }
            }
            _ => Err(format!("keep-alive {keep_alive}: {read:?}")),
        };
        report.record(policy, mode, if keep_alive { "keep-alive on" } else { "keep-alive off" }, outcome);
        let _ = session.close().await;
    }
    report.print("certvault client -> async-opcua 0.19 server: session keep-alive");
    server.stop().await;
    assert!(report.failures().is_empty(), "failed cases: {:#?}", report.failures());
}

/// The typed services not covered by the matrix, one call each, with the server's answers printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_typed_services_interop() {
    use certvault_opcua::client::SubscriptionSettings;
    use opcua::types::{
        AttributeId, BrowseDescription, BrowseDescriptionResultMask, BrowseDirection, BrowsePath, CallMethodRequest,
        MonitoredItemCreateRequest, MonitoredItemModifyRequest, MonitoringMode, MonitoringParameters, NodeClassMask,
        ObjectId, ReadValueId, ReferenceTypeId, RelativePath, RelativePathElement, TimestampsToReturn, WriteValue,
    };

    init_tracing();
    let fixture = Fixture::new();
    let server = fixture.server().await;
    let options = fixture.options(
        SecurityPolicy::Aes128Sha256RsaOaep,
        SecurityMode::SignAndEncrypt,
        UserIdentity::user_name(USER, PASSWORD),
    );
    let session = Session::connect(&server.url(), options).await.expect("connect");
    let mut done: Vec<String> = Vec::new();

    // TranslateBrowsePathsToNodeIds: Objects/Interop/Setpoint.
    let step = |name: &str| RelativePathElement {
        reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
        is_inverse: false,
        include_subtypes: true,
        target_name: QualifiedName::new(server.ns, name),
    };
    let path = BrowsePath {
        starting_node: ObjectId::ObjectsFolder.into(),
        relative_path: RelativePath { elements: Some(vec![step("Interop"), step("Setpoint")]) },
    };
    let translated = session.translate_browse_paths(vec![path]).await.expect("translate");
    let target = translated[0].targets.as_ref().and_then(|t| t.first()).expect("a target");
    assert_eq!(target.target_id.node_id, server.node("Setpoint"));
    done.push("TranslateBrowsePathsToNodeIds".into());

    // Browse one reference at a time, then BrowseNext, then release a continuation point.
    let description = BrowseDescription {
        node_id: server.node("Interop"),
        browse_direction: BrowseDirection::Forward,
        reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
        include_subtypes: true,
        node_class_mask: NodeClassMask::all().bits(),
        result_mask: BrowseDescriptionResultMask::all().bits(),
    };
    let first = session.browse(vec![description.clone()], 1, None).await.expect("browse").remove(0);
    assert_eq!(first.references.as_ref().map(Vec::len), Some(1));
    assert!(!first.continuation_point.is_null_or_empty(), "more than one reference");
    let next = session.browse_next(false, vec![first.continuation_point.clone()]).await.expect("browse next").remove(0);
    assert!(next.references.as_ref().is_some_and(|r| !r.is_empty()));
    let again = session.browse(vec![description], 1, None).await.expect("browse").remove(0);
    session.browse_next(true, vec![again.continuation_point]).await.expect("release continuation point");
    done.push("Browse(max 1) + BrowseNext + release".into());

    // RegisterNodes / UnregisterNodes, then use the registered id.
    let registered = session.register_nodes(vec![server.node("Setpoint")]).await.expect("register");
    session.write_value(&registered[0], 1.25f64).await.expect("write through the registered id");
    session.unregister_nodes(registered).await.expect("unregister");
    done.push("RegisterNodes + UnregisterNodes".into());

    // Read of several attributes, Write of several values.
    let read = session
        .read(
            vec![
                ReadValueId {
                    node_id: server.node("Counter"),
                    attribute_id: AttributeId::BrowseName as u32,
                    ..Default::default()
                },
                ReadValueId::from(server.node("Setpoint")),
            ],
            TimestampsToReturn::Neither,
            0.0,
        )
        .await
        .expect("read");
    assert_eq!(read[1].value, Some(Variant::Double(1.25)));
    let written = session
        .write(vec![
            WriteValue {
                node_id: server.node("Setpoint"),
                attribute_id: AttributeId::Value as u32,
                index_range: Default::default(),
                value: DataValue::value_only(2.5f64),
            },
            WriteValue {
                node_id: server.node("Counter"),
                attribute_id: AttributeId::Value as u32,
                index_range: Default::default(),
                value: DataValue::value_only(1i32),
            },
        ])
        .await
        .expect("write");
    done.push(format!("Read x2 ({:?}), Write x2 ({written:?})", read[0].value));
    assert!(written[0].is_good());
    assert!(written[1].is_bad(), "Counter is read-only");

    // Call with a bad argument: the per-method status.
    let called = session
        .call(vec![CallMethodRequest {
            object_id: server.node("Interop"),
            method_id: server.node("Add"),
            input_arguments: Some(vec![Variant::Int32(1), Variant::String("x".into())]),
        }])
        .await
        .expect("call");
    done.push(format!("Call with a bad argument -> {}", called[0].status_code));
    assert!(called[0].status_code.is_bad());

    // The raw subscription services.
    let settings = SubscriptionSettings { publishing_interval: Duration::from_millis(200), ..Default::default() };
    let created = session.create_subscription(&settings, true).await.expect("create subscription");
    let id = created.subscription_id;
    let items = session
        .create_monitored_items(
            id,
            TimestampsToReturn::Both,
            vec![MonitoredItemCreateRequest {
                item_to_monitor: ReadValueId::from(server.node("Counter")),
                monitoring_mode: MonitoringMode::Reporting,
                requested_parameters: MonitoringParameters {
                    client_handle: 7,
                    sampling_interval: 100.0,
                    queue_size: 5,
                    discard_oldest: true,
                    ..Default::default()
                },
            }],
        )
        .await
        .expect("create monitored items");
    let item = items[0].monitored_item_id;
    let modified = session
        .modify_monitored_items(
            id,
            TimestampsToReturn::Both,
            vec![MonitoredItemModifyRequest {
                monitored_item_id: item,
                requested_parameters: MonitoringParameters {
                    client_handle: 7,
                    sampling_interval: 200.0,
                    queue_size: 2,
                    discard_oldest: true,
                    ..Default::default()
                },
            }],
        )
        .await
        .expect("modify monitored items");
    let mode = session.set_monitoring_mode(id, MonitoringMode::Disabled, vec![item]).await.expect("monitoring mode");
    let publishing = session.set_publishing_mode(false, vec![id]).await.expect("publishing mode");
    let revised = session
        .modify_subscription(id, &SubscriptionSettings { publishing_interval: Duration::from_millis(300), ..settings })
        .await
        .expect("modify subscription");
    let republish = session.republish(id, 12345).await.expect_err("nothing to republish");
    let deleted_items = session.delete_monitored_items(id, vec![item]).await.expect("delete monitored items");
    let deleted = session.delete_subscriptions(vec![id, 999_999]).await.expect("delete subscriptions");
    done.push(format!(
        "Create/Modify/SetMonitoringMode/DeleteMonitoredItems ({} {:?} {:?}), SetPublishingMode {:?}, ModifySubscription \
         ({} ms), Republish unknown -> {}, DeleteSubscriptions {:?}",
        modified[0].status_code,
        mode,
        deleted_items,
        publishing,
        revised.revised_publishing_interval,
        republish.status_code(),
        deleted
    ));
    assert!(modified[0].status_code.is_good() && mode[0].is_good() && publishing[0].is_good());
    assert_eq!(republish.status_code(), StatusCode::BadMessageNotAvailable);
    assert!(deleted[0].is_good() && deleted[1].is_bad());

    // TransferSubscriptions of a new subscription to a second session of the same user.
    let moving = session.create_subscription(&settings, true).await.expect("create subscription").subscription_id;
    let other = Session::connect(
        &server.url(),
        fixture.options(
            SecurityPolicy::Aes128Sha256RsaOaep,
            SecurityMode::SignAndEncrypt,
            UserIdentity::user_name(USER, PASSWORD),
        ),
    )
    .await
    .expect("second session");
    let transferred = match other.transfer_subscriptions(vec![moving], false).await {
        Ok(results) => format!("{:?}", results.iter().map(|r| r.status_code).collect::<Vec<_>>()),
        Err(e @ certvault_opcua::Error::Remote { .. }) => format!("refused: {}", e.status_code()),
        Err(e) => panic!("TransferSubscriptions failed locally: {e}"),
    };
    done.push(format!("TransferSubscriptions to another session -> {transferred}"));
    let _ = other.close().await;
    println!("\ncertvault client -> async-opcua 0.19 server: typed services (Aes128_Sha256_RsaOaep, SignAndEncrypt)");
    for line in &done {
        println!("  ok  {line}");
    }
    session.close().await.expect("close");
    server.stop().await;
}
