//! TransferSubscriptions decides who is "the same user": the same user name, or for anonymous sessions the same
//! client application (its certificate). Part 4 §5.13.7.

use certvault_opcua::channel::asymmetric::LocalIdentity;
use certvault_opcua::channel::policy::{SecurityMode, SecurityPolicy};
use certvault_opcua::client::{ClientOptions, Session, SessionOptions, SubscriptionSettings, UserIdentity};
use certvault_tests::machine::{MachineServer, OPERATOR, OPERATOR_PASSWORD};
use certvault_tests::{identity, init_tracing, soft_key, Vaultd};
use opcua_types::StatusCode;

async fn session(server: &MachineServer, client: &LocalIdentity, uri: &str, user: UserIdentity) -> Session {
    let mut channel = ClientOptions::new(SecurityPolicy::Basic256Sha256, SecurityMode::SignAndEncrypt);
    channel.identity = Some(client.clone());
    channel.server_certificate = Some(server.certificate.clone());
    let mut options = SessionOptions::new(channel);
    options.identity = user;
    options.application_uri = Some(uri.into());
    Session::connect(server.endpoint_url(), options).await.expect("session")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_need_the_same_user_or_the_same_anonymous_client() {
    init_tracing();
    let vaultd = Vaultd::start(env!("CARGO_BIN_EXE_tests-vaultd"));
    let server = MachineServer::start(&vaultd, 16, |b| b).await;
    let app_a = identity(soft_key(2048, "a"), "client-a", "urn:test:client-a");
    let app_b = identity(soft_key(2048, "b"), "client-b", "urn:test:client-b");
    for app in [&app_a, &app_b] {
        server.pki.trust(app.certificate()).expect("trust");
    }
    let owner = session(&server, &app_a, "urn:test:client-a", UserIdentity::Anonymous).await;
    let created = owner.create_subscription(&SubscriptionSettings::default(), true).await.expect("subscription");
    let id = created.subscription_id;

    // Another application, also anonymous: not the same user.
    let stranger = session(&server, &app_b, "urn:test:client-b", UserIdentity::Anonymous).await;
    let results = stranger.transfer_subscriptions(vec![id], false).await.expect("transfer");
    assert_eq!(results[0].status_code, StatusCode::BadUserAccessDenied);
    // An operator is another user too.
    let operator =
        session(&server, &app_b, "urn:test:client-b", UserIdentity::user_name(OPERATOR, OPERATOR_PASSWORD)).await;
    let results = operator.transfer_subscriptions(vec![id], false).await.expect("transfer");
    assert_eq!(results[0].status_code, StatusCode::BadUserAccessDenied);
    // The same application in a new anonymous session takes it over.
    let successor = session(&server, &app_a, "urn:test:client-a", UserIdentity::Anonymous).await;
    let results = successor.transfer_subscriptions(vec![id], false).await.expect("transfer");
    assert_eq!(results[0].status_code, StatusCode::Good);
    for s in [owner, stranger, operator, successor] {
        let _ = s.close().await;
    }
}
