//! Keeping a session alive: the keep-alive read when idle, and reconnecting when the channel dies.
//!
//! A reconnect opens a new channel (with exponential back-off between attempts) and activates the existing
//! session on it with a new clientSignature over the last server nonce: the server keeps a session across channel
//! losses until its timeout, and with it the subscriptions. When the server answers that the session is gone
//! (BadSessionIdInvalid, BadSessionClosed), the client creates a new session and recovers the subscriptions
//! (TransferSubscriptions, or create them again). The state is published as a
//! [`ConnectionState`](super::ConnectionState).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::session::{channel_lost, session_lost, ConnectionState, Inner};
use super::{subscription, Client};
use crate::error::{Error, Result};

/// Back-off between reconnect attempts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Wait before the second attempt (the first starts at once).
    pub initial_delay: Duration,
    /// The longest wait between attempts.
    pub max_delay: Duration,
    /// Give up after this many attempts (`None`: never).
    pub max_attempts: Option<u32>,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            max_attempts: None,
        }
    }
}

impl ReconnectPolicy {
    /// The wait after failed attempt number `attempt` (1-based): doubling from the initial delay, capped; `None`
    /// when the policy gives up.
    pub fn delay_after(&self, attempt: u32) -> Option<Duration> {
        if self.max_attempts.is_some_and(|max| attempt >= max) {
            return None;
        }
        let factor = 1u32.checked_shl(attempt.saturating_sub(1).min(31)).unwrap_or(u32::MAX);
        Some(self.initial_delay.saturating_mul(factor).min(self.max_delay))
    }
}

/// Why the supervisor left its watch.
enum Trigger {
    ChannelClosed,
    Requested,
    KeepAliveFailed(Error),
}

/// The session's supervisor: keep-alive while connected, reconnect when the channel is lost.
pub(crate) async fn supervise(inner: Arc<Inner>) {
    loop {
        let client = inner.channel.lock().clone();
        let trigger = watch_channel(&inner, &client).await;
        if inner.closing.load(Ordering::SeqCst) {
            return;
        }
        match &trigger {
            Trigger::ChannelClosed => tracing::info!(parent: &inner.span, "channel lost; reconnecting"),
            Trigger::Requested => tracing::info!(parent: &inner.span, "session lost; reconnecting"),
            Trigger::KeepAliveFailed(e) => {
                tracing::info!(parent: &inner.span, error = %e, "keep-alive failed; reconnecting")
            }
        }
        // Whatever is still waiting on the old channel fails now instead of at its timeout.
        client.abort();
        drop(client);
        let mut attempt = 1;
        loop {
            inner.set_state(ConnectionState::Reconnecting { attempt });
            match reconnect_once(&inner).await {
                Ok(()) => {
                    inner.set_state(ConnectionState::Connected);
                    inner.publish_wake.notify_one();
                    break;
                }
                Err(e) => {
                    tracing::info!(parent: &inner.span, attempt, error = %e, "reconnect attempt failed");
                    let Some(delay) = inner.options.reconnect.delay_after(attempt) else {
                        inner.set_state(ConnectionState::Failed(e.status_code()));
                        return;
                    };
                    tokio::time::sleep(delay).await;
                    if inner.closing.load(Ordering::SeqCst) {
                        return;
                    }
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }
}

/// Waits until the channel closes, someone asks for a reconnect, or a keep-alive read fails at channel level.
async fn watch_channel(inner: &Inner, client: &Client) -> Trigger {
    let mut channel_state = client.watch_state();
    loop {
        let interval = inner.keep_alive_interval();
        tokio::select! {
            () = until_closed(&mut channel_state) => return Trigger::ChannelClosed,
            () = inner.reconnect_now.notified() => return Trigger::Requested,
            () = tokio::time::sleep(interval / 2) => {
                if inner.idle_for() < interval {
                    continue;
                }
                match inner.keep_alive(client).await {
                    Ok(()) => tracing::trace!(parent: &inner.span, "keep-alive"),
                    Err(e) if channel_lost(&e) || e.status_code() == opcua_types::StatusCode::BadSecureChannelIdInvalid => {
                        return Trigger::KeepAliveFailed(e)
                    }
                    // A lost session was reported through reconnect_now by send_on.
                    Err(e) => tracing::debug!(parent: &inner.span, error = %e, "keep-alive refused"),
                }
            }
        }
    }
}

/// Resolves when the channel reports itself closed (or its task is gone). The guard `wait_for` returns is
/// dropped here, so it never lives across an await of the caller.
async fn until_closed(state: &mut tokio::sync::watch::Receiver<super::ChannelState>) {
    let _ = state.wait_for(|s| !s.open).await.map(|_| ());
}

/// One attempt: a new channel, then the session on it.
async fn reconnect_once(inner: &Inner) -> Result<()> {
    let client = Arc::new(Client::connect_with(&inner.url, inner.channel_options.clone()).await?);
    let result = async {
        match inner.activate(&client).await {
            Ok(()) => {
                tracing::info!(parent: &inner.span, "session re-activated on a new channel");
                *inner.channel.lock() = client.clone();
                Ok(())
            }
            Err(e) if session_lost(e.status_code()) => {
                tracing::info!(parent: &inner.span, status = %e.status_code(), "the session is gone; creating a new one");
                inner.create_session(&client).await?;
                inner.activate(&client).await?;
                subscription::recover(inner, &client).await?;
                *inner.channel.lock() = client.clone();
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
    .await;
    if result.is_err() {
        let _ = client.shutdown().await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_gives_up() {
        let policy = ReconnectPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_attempts: Some(6),
        };
        let delays: Vec<_> = (1..=6).map(|a| policy.delay_after(a)).collect();
        assert_eq!(
            delays,
            vec![
                Some(Duration::from_millis(100)),
                Some(Duration::from_millis(200)),
                Some(Duration::from_millis(400)),
                Some(Duration::from_millis(800)),
                Some(Duration::from_secs(1)),
                None
            ]
        );
        let forever = ReconnectPolicy::default();
        assert_eq!(forever.delay_after(1000), Some(forever.max_delay));
    }
}
