//! The server's subscription engine (Part 4 §5.12 MonitoredItems and §5.13 Subscriptions), sans-IO.
//!
//! [`SubscriptionEngine`] owns every subscription of the server. It reads no clock and owns no timer: every call
//! takes the time ([`Now`]), [`SubscriptionEngine::poll_timeout`] says when it next needs to be woken, and a driver
//! calls [`SubscriptionEngine::handle_timeout`] then. Values come from the address space through the [`Sampler`]
//! seam. Publish requests are queued with an opaque token the driver chooses; their answers come out of
//! [`SubscriptionEngine::poll_response`], in the order they were decided.
//!
//! A driver's loop, in outline (the session layer calls the service functions as requests arrive):
//!
//! ```ignore
//! loop {
//!     let wake = engine.poll_timeout();
//!     tokio::select! {
//!         _ = sleep_until_or_forever(wake) => engine.handle_timeout(Now::system(), &address_space),
//!         Some((ctx, token, request)) = publish_requests.recv() => engine.publish(&ctx, token, &request),
//!     }
//!     while let Some((token, answer)) = engine.poll_response() {
//!         send(token, answer); // Err(status): a ServiceFault for the request behind `token`
//!     }
//! }
//! ```
//!
//! Modules, one per concept:
//! - [`filter`]: the DataChangeFilter (trigger and deadband) and its validation;
//! - [`monitored_item`]: sampling interval, queue with discardOldest and the overflow bit, monitoring modes;
//! - [`subscription`]: the §5.13.1.2 state machine, sequence numbers, keep-alives, lifetime, retransmission queue;
//! - [`publish`]: a session's queue of pending Publish requests and their timeouts;
//! - [`engine`]: the service functions and the driver interface.

pub mod engine;
pub mod filter;
pub mod monitored_item;
pub mod publish;
pub mod subscription;

#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use opcua_types::{DataValue, NodeId, ReadValueId, StatusCode, TimestampsToReturn};

use crate::channel::secure_channel::Now;
use crate::server::access::RequestContext;

pub use engine::SubscriptionEngine;
pub use filter::{Deadband, ItemFilter};
pub use monitored_item::MonitoredItem;
pub use publish::PublishQueue;
pub use subscription::{Subscription, SubscriptionState};

/// The seam to the address space: what may be monitored and its current value.
pub trait Sampler {
    /// Whether `item` may be monitored by this caller (node exists, attribute valid, readable): Good or the Bad
    /// code the Read service would return for it.
    fn check(&self, ctx: &RequestContext, item: &ReadValueId) -> StatusCode;
    /// The current value: the address space's Read of one attribute, with the timestamps asked for.
    fn sample(&self, ctx: &RequestContext, item: &ReadValueId, timestamps: TimestampsToReturn) -> DataValue;
    /// The EURange (low, high) of an analog item, which a percent deadband needs; `None` when the node has none.
    fn eu_range(&self, node: &NodeId) -> Option<(f64, f64)>;
}

/// Server limits on subscriptions. Exceeding one gives the status code the specification names.
#[derive(Clone, Debug, PartialEq)]
pub struct SubscriptionLimits {
    /// Subscriptions one session may own (BadTooManySubscriptions).
    pub max_subscriptions_per_session: usize,
    /// Subscriptions the whole server may hold (BadTooManySubscriptions).
    pub max_subscriptions: usize,
    /// Monitored items in one subscription (BadTooManyMonitoredItems).
    pub max_monitored_items_per_subscription: usize,
    /// Monitored items in the whole server (BadTooManyMonitoredItems).
    pub max_monitored_items: usize,
    /// Publish requests one session may have queued; beyond it the oldest is answered BadTooManyPublishRequests.
    pub max_publish_requests_per_session: usize,
    /// Operations in one service call (BadTooManyOperations).
    pub max_operations_per_request: usize,
    /// Shortest publishing interval granted, in milliseconds.
    pub min_publishing_interval_ms: f64,
    /// Longest publishing interval granted, in milliseconds.
    pub max_publishing_interval_ms: f64,
    /// Shortest sampling interval granted, in milliseconds.
    pub min_sampling_interval_ms: f64,
    /// Longest sampling interval granted, in milliseconds.
    pub max_sampling_interval_ms: f64,
    /// Longest monitored item queue granted.
    pub max_queue_size: u32,
    /// Largest lifetime count granted (publishing intervals without a Publish request before expiry).
    pub max_lifetime_count: u32,
    /// Largest keep-alive count granted.
    pub max_keep_alive_count: u32,
    /// Most notifications in one NotificationMessage (a client's 0, "no limit", becomes this).
    pub max_notifications_per_publish: u32,
    /// NotificationMessages each subscription keeps for Republish until they are acknowledged.
    pub retransmission_queue_len: usize,
}

impl Default for SubscriptionLimits {
    fn default() -> Self {
        SubscriptionLimits {
            max_subscriptions_per_session: 100,
            max_subscriptions: 1_000,
            max_monitored_items_per_subscription: 10_000,
            max_monitored_items: 100_000,
            max_publish_requests_per_session: 20,
            max_operations_per_request: 1_000,
            min_publishing_interval_ms: 50.0,
            max_publishing_interval_ms: 3_600_000.0,
            min_sampling_interval_ms: 50.0,
            max_sampling_interval_ms: 3_600_000.0,
            max_queue_size: 1_000,
            max_lifetime_count: 30_000,
            max_keep_alive_count: 10_000,
            max_notifications_per_publish: 1_000,
            retransmission_queue_len: 20,
        }
    }
}

/// `ms` milliseconds as a duration; negative, NaN and huge values cannot reach here (they are revised first), but a
/// bad one becomes a millisecond rather than a panic.
pub(crate) fn millis(ms: f64) -> Duration {
    Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::from_millis(1))
}

/// `t + d`, or `t` itself when the clock cannot represent it (callers bound their loops, so this never spins).
pub(crate) fn after(t: Instant, d: Duration) -> Instant {
    t.checked_add(d).unwrap_or(t)
}

/// The request context the engine samples with between requests: the owner's identity, at `now`.
pub(crate) fn context_at(owner: &Owner, now: Now) -> RequestContext {
    RequestContext {
        principal: owner.principal.clone(),
        session_id: owner.session_id.clone(),
        now,
        // Sampling only reads values; nothing it does depends on the channel's mode, and a subscription outlives
        // the channel it was created on (TransferSubscriptions, reconnects).
        security_mode: crate::channel::policy::SecurityMode::None,
    }
}

/// The session a subscription belongs to and the identity it was created or transferred under.
#[derive(Clone, Debug)]
pub struct Owner {
    /// The owning session's id.
    pub session_id: NodeId,
    /// Who the owner is, for sampling with the owner's rights and for the transfer check.
    pub principal: std::sync::Arc<crate::server::access::Principal>,
}
