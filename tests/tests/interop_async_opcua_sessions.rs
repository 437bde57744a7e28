//! async-opcua 0.19's client against our server (keys in a real vaultd) with sessions: every policy x mode, user
//! tokens anonymous, user name and X.509, and on each session Read, Write, Browse, Call and a subscription that
//! must deliver at least three data changes. Anonymous sessions may read but not write or call (the default
//! roles), so their Write and Call must be refused with BadUserAccessDenied.

use std::sync::Arc;
use std::time::Duration;

use certvault_opcua::pki::PkiStore;
use certvault_tests::machine::{MachineServer, CERT_USER, OPERATOR, OPERATOR_PASSWORD};
use certvault_tests::{init_tracing, matrix_cases, Matrix, PeerPki, Vaultd};
use opcua::client::{DataChangeCallback, IdentityToken, Session};
use opcua::types::{
    AttributeId, BrowseDescription, BrowseDirection, BrowseResultMask, CallMethodRequest, DataValue,
    MonitoredItemCreateRequest, NodeClassMask, NodeId, ReadValueId, ReferenceTypeId, StatusCode, TimestampsToReturn,
    Variant, WriteValue,
};
use tokio::sync::mpsc;

const PEER_CLIENT_URI: &str = "urn:async-opcua:interop:client";

/// One session's Read, Write, Browse, Call and subscription; `operator` says whether Write and Call must succeed.
async fn exercise(session: &Session, server: &MachineServer, operator: bool, seed: f64) -> Result<String, String> {
    let nodes = &server.nodes;
    let e = |what: &'static str| move |err: opcua::types::Error| format!("{what}: {err}");
    let read = |node: &NodeId| ReadValueId {
        node_id: node.clone(),
        attribute_id: AttributeId::Value as u32,
        ..Default::default()
    };
    let values = session
        .read(
            &[read(&NodeId::from(opcua::types::VariableId::Server_ServerStatus_CurrentTime)), read(&nodes.counter)],
            TimestampsToReturn::Both,
            0.0,
        )
        .await
        .map_err(e("read"))?;
    if !matches!(values.first().and_then(|v| v.value.as_ref()), Some(Variant::DateTime(_))) {
        return Err(format!("CurrentTime read as {:?}", values.first()));
    }
    let write = WriteValue {
        node_id: nodes.setpoint.clone(),
        attribute_id: AttributeId::Value as u32,
        index_range: Default::default(),
        value: DataValue::value_only(Variant::Double(seed)),
    };
    let written = session.write(&[write]).await.map_err(e("write"))?;
    let expected = if operator { StatusCode::Good } else { StatusCode::BadUserAccessDenied };
    if written.first() != Some(&expected) {
        return Err(format!("write gave {written:?}, expected {expected}"));
    }
    if operator {
        let back =
            session.read(&[read(&nodes.setpoint)], TimestampsToReturn::Neither, 0.0).await.map_err(e("read back"))?;
        if back.first().and_then(|v| v.value.clone()) != Some(Variant::Double(seed)) {
            return Err(format!("read back {back:?}, wrote {seed}"));
        }
    }
    let browse = BrowseDescription {
        node_id: nodes.machine.clone(),
        browse_direction: BrowseDirection::Forward,
        reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
        include_subtypes: true,
        node_class_mask: NodeClassMask::all().bits(),
        result_mask: BrowseResultMask::All as u32,
    };
    let browsed = session.browse(&[browse], 100, None).await.map_err(e("browse"))?;
    let mut names: Vec<String> = browsed
        .first()
        .and_then(|r| r.references.as_ref())
        .map(|refs| refs.iter().map(|r| r.browse_name.name.as_ref().to_owned()).collect())
        .unwrap_or_default();
    names.sort();
    if names != ["Add", "Blob", "Counter", "Setpoint"] {
        return Err(format!("browse found {names:?}"));
    }
    let call = CallMethodRequest {
        object_id: nodes.machine.clone(),
        method_id: nodes.add.clone(),
        input_arguments: Some(vec![Variant::Double(40.0), Variant::Double(2.0)]),
    };
    let called = session.call(vec![call]).await.map_err(e("call"))?;
    let result = called.first().ok_or("no call result")?;
    match (operator, result.status_code) {
        (true, StatusCode::Good) if result.output_arguments.as_deref() == Some(&[Variant::Double(42.0)][..]) => {}
        (false, StatusCode::BadUserAccessDenied) => {}
        (_, status) => return Err(format!("call gave {status} {:?}", result.output_arguments)),
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let subscription = session
        .create_subscription(
            Duration::from_millis(100),
            300,
            10,
            0,
            0,
            true,
            DataChangeCallback::new(move |value, _item| {
                let _ = tx.send(value);
            }),
        )
        .await
        .map_err(e("create subscription"))?;
    let item = MonitoredItemCreateRequest::new(
        read(&nodes.counter),
        opcua::types::MonitoringMode::Reporting,
        Default::default(),
    );
    let created = session
        .create_monitored_items(subscription, TimestampsToReturn::Both, vec![item])
        .await
        .map_err(e("monitor"))?;
    if created.first().map(|c| c.result.status_code) != Some(StatusCode::Good) {
        return Err(format!("monitored item: {:?}", created.first().map(|c| c.result.status_code)));
    }
    let mut changes = Vec::new();
    while changes.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(value)) => changes.push(value.value),
            _ => return Err(format!("{} of 3 data changes", changes.len())),
        }
    }
    let counts: Vec<i64> =
        changes.iter().filter_map(|v| if let Some(Variant::Int64(n)) = v { Some(*n) } else { None }).collect();
    if counts.len() != 3 || counts.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!("data changes {changes:?} are not three rising counts"));
    }
    session.delete_subscription(subscription).await.map_err(e("delete subscription"))?;
    Ok(format!("read/write/browse/call {}, changes {counts:?}", if operator { "ok" } else { "refused as expected" }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_opcua_client_sessions_against_our_server_interop() {
    init_tracing();
    let vaultd = Vaultd::start(env!("CARGO_BIN_EXE_tests-vaultd"));
    // async-opcua reads its user key from a file: this user is the peer's, its certificate trusted by our server.
    let user = PeerPki::new(CERT_USER, "urn:async-opcua:interop:user");
    let user_dir = tempfile::tempdir().expect("tempdir");
    let user_store = Arc::new(PkiStore::create_or_open(user_dir.path()).expect("user pki"));
    user_store.trust(&user.certificate).expect("trust the user");
    let server = MachineServer::start(&vaultd, 1024, |b| b.user_pki(user_store.clone())).await;
    let pki = PeerPki::new("async-opcua client", PEER_CLIENT_URI);
    server.pki.trust(&pki.certificate).expect("trust the peer");

    let mut peer = pki
        .client_builder("async-opcua interop client", PEER_CLIENT_URI, "urn:async-opcua:interop")
        .client()
        .expect("async-opcua client");

    let mut matrix = Matrix::default();
    let mut seed = 1.0;
    for (policy, mode) in matrix_cases() {
        for (token_name, operator) in [("anonymous", false), ("username", true), ("x509", true)] {
            let token = match token_name {
                "anonymous" => IdentityToken::Anonymous,
                "username" => IdentityToken::new_user_name(OPERATOR, OPERATOR_PASSWORD),
                _ => IdentityToken::new_x509_path(
                    user.path().join("own/cert.der"),
                    user.path().join("private/private.pem"),
                )
                .expect("user token"),
            };
            seed += 1.0;
            let endpoint = (server.endpoint_url(), policy.uri(), mode.to_wire());
            let run = async {
                let (session, event_loop) =
                    peer.connect_to_matching_endpoint(endpoint, token).await.map_err(|e| e.to_string())?;
                let handle = event_loop.spawn();
                if !session.wait_for_connection().await {
                    handle.abort();
                    return Err("not connected".to_owned());
                }
                let outcome = exercise(&session, &server, operator, seed).await;
                let _ = session.disconnect().await;
                handle.abort();
                outcome
            };
            let outcome = match tokio::time::timeout(Duration::from_secs(30), run).await {
                Ok(outcome) => outcome,
                Err(_) => Err("timed out".into()),
            };
            matrix.record(policy, mode, &format!("async-opcua client -> certvault server, {token_name}"), outcome);
        }
    }

    // A wrong password is refused with BadUserAccessDenied.
    let (policy, mode) = (
        certvault_opcua::channel::policy::SecurityPolicy::Basic256Sha256,
        certvault_opcua::channel::policy::SecurityMode::SignAndEncrypt,
    );
    let wrong = peer
        .connect_to_matching_endpoint(
            (server.endpoint_url(), policy.uri(), mode.to_wire()),
            IdentityToken::new_user_name(OPERATOR, "wrong"),
        )
        .await;
    let refused = match wrong {
        Ok((session, event_loop)) => {
            let handle = event_loop.spawn();
            let connected =
                tokio::time::timeout(Duration::from_secs(10), session.wait_for_connection()).await.unwrap_or(false);
            handle.abort();
            if connected {
                Err("a wrong password was accepted".to_owned())
            } else {
                Ok("refused".to_owned())
            }
        }
        Err(e) if e.status() == StatusCode::BadUserAccessDenied => Ok("BadUserAccessDenied".to_owned()),
        Err(e) => Err(format!("refused with {e}, expected BadUserAccessDenied")),
    };
    matrix.record(policy, mode, "async-opcua client, wrong password", refused);

    matrix.print("async-opcua 0.19 client -> certvault server (keys in vaultd): sessions and services");
    server.server.shutdown_handle().shutdown();
    assert!(matrix.failures().is_empty(), "failed cases: {:#?}", matrix.failures());
}
