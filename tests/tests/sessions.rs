//! Our client against our server, end to end over real sockets, with every private key in a real vaultd: the
//! server's application key, the client's application key and the X.509 user's key.
//!
//! - every policy x mode x user token (anonymous, user name, X.509) reads, writes, browses, calls and receives three
//!   data changes; anonymous sessions are refused the write and the call (BadUserAccessDenied);
//! - discovery over None picks the strongest endpoint, Aes256_Sha256_RsaPss with SignAndEncrypt;
//! - a dropped TCP connection (through a proxy): the same session is activated on a new channel and the
//!   subscription stream goes on;
//! - a client that stops its keep-alives loses its session at the server's timeout, while one that keeps them
//!   does not;
//! - TransferSubscriptions moves a subscription to a new session after the old session's channel died, and
//!   another user may not take it;
//! - requests the server holds time out at their own deadlines while the session keeps serving.
//!
//! Run with `--nocapture` to see the matrix.

use std::time::Duration;

use certvault_opcua::channel::asymmetric::LocalIdentity;
use certvault_opcua::channel::policy::{SecurityMode, SecurityPolicy};
use certvault_opcua::client::{
    ClientOptions, ConnectionState, DataChange, EndpointFilter, MonitoredItemSpec, ReconnectPolicy, Session,
    SessionOptions, SubscriptionSettings, UserIdentity,
};
use certvault_opcua::error::Error;
use certvault_opcua::server::address_space::MethodSpec;
use certvault_opcua::server::SessionLimits;
use certvault_opcua::transport::uacp::Limits;
use certvault_tests::client::{fast_subscription, next_changes, wait_state};
use certvault_tests::machine::{MachineServer, OPERATOR, OPERATOR_PASSWORD};
use certvault_tests::proxy::Proxy;
use certvault_tests::{identity, init_tracing, matrix_cases, Matrix, Vaultd, STEP_TIMEOUT};
use futures_util::StreamExt;
use opcua_types::{
    AttributeId, ByteString, CallMethodRequest, DataChangeNotification, DataValue, MessageSecurityMode,
    MonitoredItemCreateRequest, MonitoringMode, MonitoringParameters, NodeId, ReadValueId, StatusCode,
    TimestampsToReturn, Variant, WriteValue,
};

const OUR_CLIENT_URI: &str = "urn:certvault:test:client";
/// Sessions of the matrix at a time.
const SESSIONS_AT_ONCE: usize = 4;

/// The machine server and a client identity it trusts, all keys in one vaultd.
struct Fixture {
    server: MachineServer,
    app: LocalIdentity,
    _vaultd: Vaultd,
}

impl Fixture {
    async fn start(
        customize: impl FnOnce(certvault_opcua::server::ServerBuilder) -> certvault_opcua::server::ServerBuilder,
    ) -> Fixture {
        let vaultd = Vaultd::start(env!("CARGO_BIN_EXE_tests-vaultd"));
        let server = MachineServer::start(&vaultd, 1024, customize).await;
        let app = identity(vaultd.generate_rsa("opcua-client", 2048), "client", OUR_CLIENT_URI);
        server.pki.trust(app.certificate()).expect("trust our client");
        Fixture { server, app, _vaultd: vaultd }
    }

    fn options(&self, policy: SecurityPolicy, mode: SecurityMode, user: UserIdentity) -> SessionOptions {
        let mut channel = ClientOptions::new(policy, mode);
        channel.timeout = Duration::from_secs(20);
        if !policy.is_none() {
            channel.identity = Some(self.app.clone());
            channel.server_certificate = Some(self.server.certificate.clone());
        }
        let mut options = SessionOptions::new(channel);
        options.identity = user;
        options.application_uri = Some(OUR_CLIENT_URI.into());
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
            ("username", UserIdentity::user_name(OPERATOR, OPERATOR_PASSWORD)),
            (
                "x509",
                UserIdentity::x509(self.server.cert_user.certificate().to_vec(), self.server.cert_user.key().clone()),
            ),
        ]
    }
}

fn counter_values(changes: &[DataChange]) -> Vec<i64> {
    changes
        .iter()
        .filter_map(|c| match c.value.value {
            Some(Variant::Int64(v)) => Some(v),
            _ => None,
        })
        .collect()
}

fn increasing(values: &[i64], n: usize) -> bool {
    values.len() == n && values.windows(2).all(|w| w[1] > w[0])
}

/// One session: read, write + read back (under `setpoint`: cells run at once), browse, call, three data changes.
/// Anonymous sessions must be refused the write and the call with BadUserAccessDenied.
async fn exercise(
    fixture: &Fixture,
    options: SessionOptions,
    operator: bool,
    seed: f64,
    setpoint: &tokio::sync::Mutex<()>,
) -> Result<String, String> {
    let e = |what: &'static str| move |err: certvault_opcua::Error| format!("{what}: {err} ({})", err.status_code());
    let nodes = &fixture.server.nodes;
    let session = Session::connect(fixture.server.endpoint_url(), options).await.map_err(e("connect"))?;
    let mut done = Vec::new();
    let value = session.read_value(&nodes.setpoint).await.map_err(e("read"))?;
    if !matches!(value, Variant::Double(_)) {
        return Err(format!("Setpoint is {value:?}"));
    }
    {
        let _guard = setpoint.lock().await;
        let written = session.write_value(&nodes.setpoint, seed).await;
        match (operator, written) {
            (true, Ok(())) => {
                let back = session.read_value(&nodes.setpoint).await.map_err(e("read back"))?;
                if back != Variant::Double(seed) {
                    return Err(format!("read back {back:?}, wrote {seed}"));
                }
                done.push("read/write".to_owned());
            }
            (false, Err(err)) if err.status_code() == StatusCode::BadUserAccessDenied => {
                done.push("read, write BadUserAccessDenied (expected)".to_owned())
            }
            (_, other) => {
                return Err(format!("write as {}: {other:?}", if operator { "operator" } else { "anonymous" }))
            }
        }
    }
    let children = session.browse_children(&nodes.machine).await.map_err(e("browse"))?;
    let mut names: Vec<String> = children.iter().map(|r| r.browse_name.name.as_ref().to_owned()).collect();
    names.sort();
    if names != ["Add", "Blob", "Counter", "Setpoint"] {
        return Err(format!("browse found {names:?}"));
    }
    done.push("browse".to_owned());
    let sum = session.call_method(&nodes.machine, &nodes.add, vec![Variant::Double(1.25), Variant::Double(2.0)]).await;
    match (operator, sum) {
        (true, Ok(sum)) if sum == [Variant::Double(3.25)] => done.push("call".to_owned()),
        (false, Err(err)) if err.status_code() == StatusCode::BadUserAccessDenied => {
            done.push("call BadUserAccessDenied (expected)".to_owned())
        }
        (_, other) => return Err(format!("Add(1.25, 2): {other:?}")),
    }
    let mut stream = session
        .subscribe(fast_subscription(), vec![MonitoredItemSpec::value(nodes.counter.clone())])
        .await
        .map_err(e("subscribe"))?;
    let values = counter_values(&next_changes(&mut stream, 3, Duration::from_secs(15)).await?);
    if !increasing(&values, 3) {
        return Err(format!("Counter changes {values:?}"));
    }
    drop(stream);
    session.close().await.map_err(e("close"))?;
    Ok(format!("{}, changes {values:?}", done.join(", ")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_every_policy_mode_and_token() {
    init_tracing();
    let fixture = Fixture::start(|b| b).await;
    let mut cells = Vec::new();
    for (policy, mode) in matrix_cases() {
        for (token, user) in fixture.users() {
            cells.push((policy, mode, token, fixture.options(policy, mode, user)));
        }
    }
    let started = std::time::Instant::now();
    let lock = tokio::sync::Mutex::new(());
    let (fixture_ref, lock_ref) = (&fixture, &lock);
    let outcomes: Vec<_> = futures_util::stream::iter(cells.into_iter().enumerate().map(
        |(i, (policy, mode, token, options))| async move {
            let run = exercise(fixture_ref, options, token != "anonymous", 10.5 + i as f64, lock_ref);
            let outcome = tokio::time::timeout(STEP_TIMEOUT, run).await.unwrap_or_else(|_| Err("timed out".into()));
            (policy, mode, token, outcome)
        },
    ))
    .buffered(SESSIONS_AT_ONCE)
    .collect()
    .await;
    let mut matrix = Matrix::default();
    for (policy, mode, token, outcome) in outcomes {
        matrix.record(policy, mode, &format!("certvault -> certvault, {token}"), outcome);
    }
    matrix.print(&format!(
        "certvault client -> certvault server (server, client and user keys in vaultd) ({:.1} s)",
        started.elapsed().as_secs_f64()
    ));
    assert!(matrix.failures().is_empty(), "failed cases: {:#?}", matrix.failures());
    assert_eq!(fixture.server.session_count(), 0, "every session was closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_discovery_picks_the_strongest_endpoint() {
    init_tracing();
    let fixture = Fixture::start(|b| b).await;
    let mut options =
        fixture.options(SecurityPolicy::None, SecurityMode::None, UserIdentity::user_name(OPERATOR, OPERATOR_PASSWORD));
    options.channel.identity = Some(fixture.app.clone());
    options.discovery = Some(EndpointFilter::secure());
    let session = Session::connect(fixture.server.endpoint_url(), options).await.expect("discover and connect");
    let endpoint = session.endpoint().clone();
    println!(
        "\ndiscovery chose {} {:?} (securityLevel {})",
        endpoint.security_policy_uri.as_ref(),
        endpoint.security_mode,
        endpoint.security_level
    );
    assert_eq!(session.security_policy(), SecurityPolicy::Aes256Sha256RsaPss);
    assert_eq!(endpoint.security_mode, MessageSecurityMode::SignAndEncrypt);
    session.write_value(&fixture.server.nodes.setpoint, 7.0f64).await.expect("write over the chosen endpoint");
    session.close().await.expect("close");
}

/// Polls a condition of the server that no event reports (its session table, its connections), bounded.
async fn until(what: &str, condition: impl Fn() -> bool) {
    let polled = async {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while !condition() {
            tick.tick().await;
        }
    };
    tokio::time::timeout(STEP_TIMEOUT, polled).await.unwrap_or_else(|_| panic!("{what} within {STEP_TIMEOUT:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_reconnect_reactivates_the_same_session() {
    init_tracing();
    let fixture = Fixture::start(|b| b).await;
    let proxy = Proxy::start(fixture.server.local_addr()).await;
    let user = fixture.users().pop().expect("x509").1;
    let options = fixture.options(SecurityPolicy::Aes256Sha256RsaPss, SecurityMode::SignAndEncrypt, user);
    let session = Session::connect(&proxy.url(), options).await.expect("connect through the proxy");
    let first_session = session.session_id();
    let first_channel = session.channel().channel_state().secure_channel_id;
    let mut stream = session
        .subscribe(fast_subscription(), vec![MonitoredItemSpec::value(fixture.server.nodes.counter.clone())])
        .await
        .expect("subscribe");
    let before = counter_values(&next_changes(&mut stream, 3, Duration::from_secs(10)).await.expect("changes before"));

    proxy.cut();
    let state = wait_state(&session, |s| matches!(s, ConnectionState::Reconnecting { .. })).await;
    wait_state(&session, |s| *s == ConnectionState::Connected).await;
    let after = counter_values(&next_changes(&mut stream, 3, Duration::from_secs(15)).await.expect("changes after"));
    let second_channel = session.channel().channel_state().secure_channel_id;
    println!(
        "\nreconnect: {state:?}; session {first_session} kept; channel {first_channel} -> {second_channel}; stream \
         {before:?} -> {after:?}"
    );
    assert_eq!(session.session_id(), first_session, "the same session is re-activated");
    assert_ne!(second_channel, first_channel, "on a new channel");
    assert_eq!(fixture.server.session_count(), 1, "no second session was created");
    assert!(increasing(&before, 3) && increasing(&after, 3) && after[0] > before[2], "{before:?} -> {after:?}");
    session.write_value(&fixture.server.nodes.setpoint, 3.25f64).await.expect("services after the reconnect");
    drop(stream);
    session.close().await.expect("close");
    assert_eq!(fixture.server.session_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_time_out_without_keep_alive() {
    init_tracing();
    let limits = SessionLimits { min_timeout: Duration::from_millis(500), ..SessionLimits::default() };
    let fixture = Fixture::start(|b| b.session_limits(limits)).await;
    let (policy, mode) = (SecurityPolicy::Basic256Sha256, SecurityMode::SignAndEncrypt);
    let connect = |keep_alive: bool| {
        let mut options = fixture.options(policy, mode, UserIdentity::user_name(OPERATOR, OPERATOR_PASSWORD));
        options.session_timeout = Duration::from_millis(1500);
        if !keep_alive {
            options.keep_alive_interval = Some(Duration::from_secs(3600));
        }
        Session::connect(fixture.server.endpoint_url(), options)
    };
    let kept = connect(true).await.expect("connect (keep-alive)");
    let silent = connect(false).await.expect("connect (no keep-alive)");
    let revised = silent.revised_timeout();
    assert_eq!(revised, Duration::from_millis(1500));
    let (kept_id, silent_id) = (kept.session_id(), silent.session_id());

    // The silent one expires at the server; the other one, idle as long, keeps reading CurrentTime.
    until("the silent session expires", || fixture.server.session_count() == 1).await;
    tokio::time::sleep(revised * 2).await; // idle for two more timeouts: the kept session must survive them
    assert_eq!(fixture.server.session_count(), 1, "the session with keep-alives survives");
    kept.read_value(&fixture.server.nodes.setpoint).await.expect("the kept session still works");
    assert_eq!(kept.session_id(), kept_id);

    let err = silent.read_value(&fixture.server.nodes.setpoint).await.expect_err("the silent session is gone");
    assert_eq!(err.status_code(), StatusCode::BadSessionIdInvalid, "{err}");
    wait_state(&silent, |s| *s == ConnectionState::Connected).await;
    silent.read_value(&fixture.server.nodes.setpoint).await.expect("a new session took over");
    assert_ne!(silent.session_id(), silent_id);
    println!(
        "\nsession timeout {revised:?}: without keep-alive the server dropped the session ({}), a new one took over; \
         with keep-alive the session lived on",
        err.status_code()
    );
    kept.close().await.expect("close");
    silent.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_transfer_subscriptions_after_the_channel_died() {
    init_tracing();
    let fixture = Fixture::start(|b| b).await;
    let nodes = fixture.server.nodes.clone();
    let (policy, mode) = (SecurityPolicy::Aes128Sha256RsaOaep, SecurityMode::SignAndEncrypt);
    let operator = || fixture.options(policy, mode, UserIdentity::user_name(OPERATOR, OPERATOR_PASSWORD));
    let old = Session::connect(fixture.server.endpoint_url(), operator()).await.expect("old session");
    let settings = SubscriptionSettings {
        publishing_interval: Duration::from_millis(100),
        lifetime_count: 600,
        max_keep_alive_count: 10,
        ..Default::default()
    };
    let id = old.create_subscription(&settings, true).await.expect("create subscription").subscription_id;
    let items = old
        .create_monitored_items(
            id,
            TimestampsToReturn::Both,
            vec![MonitoredItemCreateRequest {
                item_to_monitor: ReadValueId::from(nodes.counter.clone()),
                monitoring_mode: MonitoringMode::Reporting,
                requested_parameters: MonitoringParameters {
                    client_handle: 42,
                    sampling_interval: 100.0,
                    queue_size: 10,
                    discard_oldest: true,
                    ..Default::default()
                },
            }],
        )
        .await
        .expect("monitored item");
    assert!(items[0].status_code.is_good());

    // The old session's channel dies and its client is gone: nobody re-activates it.
    let connections = fixture.server.live_connections();
    let channel = old.channel();
    drop(old);
    channel.abort();
    drop(channel);
    until("the server sees the channel close", || fixture.server.live_connections() < connections).await;
    assert_eq!(fixture.server.session_count(), 1, "the orphaned session waits for its timeout");

    // Another user may not take the subscription.
    let stranger =
        Session::connect(fixture.server.endpoint_url(), fixture.options(policy, mode, UserIdentity::Anonymous))
            .await
            .expect("anonymous session");
    let refused = stranger.transfer_subscriptions(vec![id], true).await.expect("TransferSubscriptions answered");
    assert_eq!(refused[0].status_code, StatusCode::BadUserAccessDenied, "{refused:?}");
    stranger.close().await.expect("close");

    // The same user takes it in a new session and gets its data changes (the current value first).
    let new = Session::connect(fixture.server.endpoint_url(), operator()).await.expect("new session");
    let moved = new.transfer_subscriptions(vec![id], true).await.expect("TransferSubscriptions");
    assert_eq!(moved[0].status_code, StatusCode::Good, "{moved:?}");
    let mut values = Vec::new();
    let mut acks = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while values.len() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "3 data changes after the transfer, got {values:?}");
        let response = new.publish(std::mem::take(&mut acks), Duration::from_secs(5)).await.expect("publish");
        assert_eq!(response.subscription_id, id);
        let message = response.notification_message;
        if message.notification_data.as_ref().is_some_and(|d| !d.is_empty()) {
            acks.push(opcua_types::SubscriptionAcknowledgement {
                subscription_id: id,
                sequence_number: message.sequence_number,
            });
        }
        for data in message.notification_data.iter().flatten() {
            if let Some(change) = data.inner_as::<DataChangeNotification>() {
                for item in change.monitored_items.iter().flatten() {
                    assert_eq!(item.client_handle, 42);
                    if let Some(Variant::Int64(v)) = item.value.value {
                        values.push(v);
                    }
                }
            }
        }
    }
    println!("\nTransferSubscriptions after the channel died: {moved:?}; anonymous refused; data changes {values:?}");
    assert!(values.windows(2).all(|w| w[1] > w[0]), "{values:?}");
    new.close().await.expect("close");
}

/// An anonymous Basic256Sha256 SignAndEncrypt session of a client whose key is in `vaultd` and whom `server` trusts.
async fn anonymous_session(vaultd: &Vaultd, server: &MachineServer) -> Session {
    let app = identity(vaultd.generate_rsa("opcua-client", 2048), "client", OUR_CLIENT_URI);
    server.pki.trust(app.certificate()).expect("trust our client");
    let mut channel = ClientOptions::new(SecurityPolicy::Basic256Sha256, SecurityMode::SignAndEncrypt);
    channel.identity = Some(app);
    channel.server_certificate = Some(server.certificate.clone());
    let mut options = SessionOptions::new(channel);
    options.application_uri = Some(OUR_CLIENT_URI.into());
    let session = Session::connect(server.endpoint_url(), options).await.expect("session");
    session
}

/// Requests the server holds (a method that waits) fail with Error::Timeout at their own deadlines: a shorter
/// timeout issued after a longer one fires first. The session serves other requests meanwhile, and the responses
/// that arrive after their callers gave up are dropped without harm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_time_out_requests_the_server_holds() {
    init_tracing();
    let fixture = Fixture::start(|b| b).await;
    let nodes = fixture.server.nodes.clone();
    let release = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let hold_method = {
        let release = release.clone();
        let spec = MethodSpec::new(NodeId::new(nodes.ns, "Machine.Hold"), "Hold", nodes.machine.clone(), move |_| {
            let release = release.clone();
            async move {
                release.acquire().await.map_err(|_| StatusCode::BadShutdown)?.forget();
                Ok(Vec::new())
            }
        });
        fixture.server.space.write_guard().add_method(spec).expect("Hold")
    };
    let operator = UserIdentity::user_name(OPERATOR, OPERATOR_PASSWORD);
    let options = fixture.options(SecurityPolicy::Basic256Sha256, SecurityMode::SignAndEncrypt, operator);
    let session = std::sync::Arc::new(Session::connect(fixture.server.endpoint_url(), options).await.expect("session"));
    let hold = |timeout: Duration| {
        let session = session.clone();
        let call = CallMethodRequest {
            object_id: nodes.machine.clone(),
            method_id: hold_method.clone(),
            input_arguments: None,
        };
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let result = session.call_with_timeout(vec![call], timeout).await;
            (result, started.elapsed())
        })
    };
    let long = hold(Duration::from_secs(2));
    // The long request is sent (and its deadline armed) before the short one.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let short = hold(Duration::from_millis(300));

    let (result, took) = short.await.expect("join");
    assert!(matches!(result, Err(Error::Timeout(_))), "the short call: {result:?}");
    assert!(took >= Duration::from_millis(300) && took < Duration::from_millis(1500), "the short call took {took:?}");
    let value = session.read_value(&nodes.setpoint).await.expect("a Read while two calls are held");
    assert!(matches!(value, Variant::Double(_)), "{value:?}");

    let (result, took) = long.await.expect("join");
    assert!(matches!(result, Err(Error::Timeout(_))), "the long call: {result:?}");
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(5), "the long call took {took:?}");

    // The held calls finish now; their responses find nobody waiting, and the channel carries on.
    release.add_permits(2);
    let sum = session
        .call_method(&nodes.machine, &nodes.add, vec![Variant::Double(1.0), Variant::Double(2.0)])
        .await
        .expect("Add after the late responses");
    assert_eq!(sum, vec![Variant::Double(3.0)]);
    println!("\nheld calls: the 300 ms call timed out first, then the 2 s call; Read and Add served meanwhile");
    let session = std::sync::Arc::try_unwrap(session).unwrap_or_else(|_| panic!("session still shared"));
    session.close().await.expect("close");
}

/// A 1 MiB ByteString value crosses the channel whole (many chunks) and decodes on our client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_read_a_one_megabyte_value() {
    init_tracing();
    let vaultd = Vaultd::start(env!("CARGO_BIN_EXE_tests-vaultd"));
    let server = MachineServer::start(&vaultd, 1 << 20, |b| b).await;
    let session = anonymous_session(&vaultd, &server).await;
    let value = session.read_value(&server.nodes.blob).await.expect("read the blob");
    let Variant::ByteString(bytes) = value else { panic!("Blob is {value:?}") };
    let bytes = bytes.value.unwrap_or_default();
    assert_eq!(bytes.len(), 1 << 20);
    assert!(bytes.iter().enumerate().all(|(i, b)| *b == (i % 256) as u8), "the content arrived intact");

    // The other way: a 12 MiB request is more than a socket buffer takes at once, so the caller leaves most of it to
    // the connection task; small reads issued meanwhile must queue behind it in order, and all get their answers.
    let session = std::sync::Arc::new(session);
    let big = ByteString::from(vec![7u8; 12 << 20]);
    let writer = {
        let session = session.clone();
        let blob = server.nodes.blob.clone();
        tokio::spawn(async move {
            session
                .write(vec![WriteValue {
                    node_id: blob,
                    attribute_id: AttributeId::Value as u32,
                    index_range: Default::default(),
                    value: DataValue::value_only(Variant::ByteString(big)),
                }])
                .await
        })
    };
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let session = session.clone();
            let node = server.nodes.setpoint.clone();
            tokio::spawn(async move { session.read_value(&node).await })
        })
        .collect();
    let written = writer.await.expect("join").expect("the 12 MiB Write is answered");
    assert_eq!(written.len(), 1, "one status for one value: {written:?}");
    for reader in readers {
        let value = reader.await.expect("join").expect("a Read sent during the big Write");
        assert!(matches!(value, Variant::Double(_)), "{value:?}");
    }
    // The channel is intact afterwards.
    let again = session.read_value(&server.nodes.blob).await.expect("read after the big write");
    assert!(matches!(again, Variant::ByteString(_)));
    let session = std::sync::Arc::try_unwrap(session).unwrap_or_else(|_| panic!("session still shared"));
    session.close().await.expect("close");
}

/// A request over the server's MaxMessageSize is refused before a byte of it is sent (BadRequestTooLarge, at once,
/// not a timeout), and the session keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_refuse_a_request_over_the_servers_limit_and_keep_serving() {
    init_tracing();
    let vaultd = Vaultd::start(env!("CARGO_BIN_EXE_tests-vaultd"));
    let limits = Limits { max_message_size: 256 * 1024, ..Limits::default() };
    let server = MachineServer::start(&vaultd, 1024, |b| b.limits(limits)).await;
    let session = anonymous_session(&vaultd, &server).await;
    let too_big = WriteValue {
        node_id: server.nodes.blob.clone(),
        attribute_id: AttributeId::Value as u32,
        index_range: Default::default(),
        value: DataValue::value_only(Variant::ByteString(ByteString::from(vec![1u8; 512 * 1024]))),
    };
    let started = std::time::Instant::now();
    let refused = session.write(vec![too_big]).await.expect_err("a 512 KiB Write over a 256 KiB limit");
    assert_eq!(refused.status_code(), StatusCode::BadRequestTooLarge, "{refused}");
    assert!(started.elapsed() < STEP_TIMEOUT, "refused locally, not after a timeout");
    let value = session.read_value(&server.nodes.setpoint).await.expect("the session still serves");
    assert!(matches!(value, Variant::Double(_)), "{value:?}");
    session.close().await.expect("close");
}
