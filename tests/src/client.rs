//! Helpers shared by the session and interop tests of our client: fast subscriptions, waiting for data changes and
//! for connection states.

use std::time::Duration;

use certvault_opcua::client::{ConnectionState, DataChange, Session, SubscriptionParams, SubscriptionStream};
use futures_util::StreamExt;

use crate::STEP_TIMEOUT;

/// A subscription that publishes every 100 ms, so a test sees data changes quickly.
pub fn fast_subscription() -> SubscriptionParams {
    SubscriptionParams {
        publishing_interval: Duration::from_millis(100),
        max_keep_alive_count: 10,
        lifetime_count: 300,
        ..Default::default()
    }
}

/// The next `n` data changes of `stream` within `within`, or what went wrong.
pub async fn next_changes(
    stream: &mut SubscriptionStream,
    n: usize,
    within: Duration,
) -> Result<Vec<DataChange>, String> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while got.len() < n {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(change)) => got.push(change),
            Ok(None) => return Err(format!("the stream ended after {} changes", got.len())),
            Err(_) => return Err(format!("{} of {n} data changes in {within:?}", got.len())),
        }
    }
    Ok(got)
}

/// Waits (at most [`STEP_TIMEOUT`]) until the session's connection state satisfies `wanted`.
// The binding ends the borrow of the receiver before it drops (edition 2021 drops tail temporaries last).
#[allow(clippy::let_and_return)]
pub async fn wait_state(session: &Session, wanted: impl Fn(&ConnectionState) -> bool) -> ConnectionState {
    let mut state = session.state();
    let reached = tokio::time::timeout(STEP_TIMEOUT, state.wait_for(|s| wanted(s))).await;
    let reached = reached.expect("state in time").expect("state channel").clone();
    reached
}
