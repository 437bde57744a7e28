//! Subscriptions as streams: [`Session::subscribe`] creates a subscription with monitored items and returns a
//! [`SubscriptionStream`] of [`DataChange`]s.
//!
//! One publish loop per session keeps [`SessionOptions::publish_requests`](super::SessionOptions) Publish requests
//! outstanding (Publish requests belong to the session, not to a subscription), acknowledges what it received in
//! the next request, and checks every subscription's sequence numbers with a [`SequenceTracker`]: a gap (a
//! notification or keep-alive further ahead than expected, e.g. after responses were lost with a channel) is filled
//! with Republish while the server still keeps those messages. Streams survive reconnects: the session either
//! re-activates on a new channel (the server kept the subscriptions), transfers them to a new session, or creates
//! them again with the same monitored items and client handles.
//!
//! ```no_run
//! # async fn demo(session: &certvault_opcua::client::Session) -> certvault_opcua::Result<()> {
//! use certvault_opcua::client::{MonitoredItemSpec, SubscriptionParams};
//! use futures_util::StreamExt;
//! use opcua_types::NodeId;
//!
//! let mut changes = session
//!     .subscribe(SubscriptionParams::default(), vec![MonitoredItemSpec::value(NodeId::new(2, "Temperature"))])
//!     .await?;
//! while let Some(change) = changes.next().await {
//!     println!("{} = {:?}", change.node_id, change.value.value);
//! }
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use opcua_types::{
    AttributeId, DataChangeNotification, DataValue, ExtensionObject, MonitoredItemCreateRequest, MonitoringMode,
    MonitoringParameters, NodeId, NotificationMessage, PublishRequest, PublishResponse, ReadValueId, RepublishRequest,
    RequestHeader, StatusChangeNotification, StatusCode, SubscriptionAcknowledgement, TimestampsToReturn,
    TransferSubscriptionsRequest,
};
use tokio::sync::mpsc;

pub use super::services::SubscriptionSettings as SubscriptionParams;
use super::session::{channel_lost, ConnectionState, Inner};
use super::{Client, Session};
use crate::error::{Error, Result};

/// One value change of a monitored item.
#[derive(Clone, Debug, PartialEq)]
pub struct DataChange {
    /// The client handle of the monitored item (stable across reconnects).
    pub client_handle: u32,
    /// The monitored node.
    pub node_id: NodeId,
    /// The new value, with its status and timestamps.
    pub value: DataValue,
}

/// What to monitor.
#[derive(Clone, Debug, PartialEq)]
pub struct MonitoredItemSpec {
    /// The node.
    pub node_id: NodeId,
    /// The attribute (normally Value).
    pub attribute_id: AttributeId,
    /// Requested sampling interval (zero: as fast as the server goes; negative in OPC UA means "the publishing
    /// interval", use [`MonitoredItemSpec::sampling_interval`] `None` for that).
    pub sampling_interval: Option<Duration>,
    /// Server-side queue size.
    pub queue_size: u32,
    /// Whether the server discards the oldest value when the queue is full.
    pub discard_oldest: bool,
}

impl MonitoredItemSpec {
    /// The Value attribute of `node_id`, sampled at the publishing interval, queue of 10.
    pub fn value(node_id: NodeId) -> Self {
        MonitoredItemSpec {
            node_id,
            attribute_id: AttributeId::Value,
            sampling_interval: None,
            queue_size: 10,
            discard_oldest: true,
        }
    }
}

/// The result of comparing a sequence number with the one expected next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SequenceCheck {
    /// The expected number (or the first one seen).
    InOrder,
    /// Ahead of the expected number: these were skipped (at most [`SequenceTracker::MAX_GAP`], the newest).
    Gap(Vec<u32>),
    /// Behind the expected number: a duplicate or a message already republished.
    Stale,
}

/// Sans-IO tracking of one subscription's NotificationMessage sequence numbers (Part 4 §7.25: they start at 1,
/// increase by one per notification, wrap from 4294967295 to 1, and a keep-alive carries the next number without
/// consuming it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SequenceTracker {
    next: Option<u32>,
}

fn successor(n: u32) -> u32 {
    if n == u32::MAX {
        1
    } else {
        n + 1
    }
}

/// Steps from `from` to `to` in the cycle 1..=u32::MAX.
fn distance(from: u32, to: u32) -> u32 {
    if to >= from {
        to - from
    } else {
        (u32::MAX - from).wrapping_add(to)
    }
}

impl SequenceTracker {
    /// Most numbers reported in one gap: a server keeps only a few messages for Republish, so asking for more
    /// would only produce BadMessageNotAvailable.
    pub const MAX_GAP: u32 = 64;

    /// A tracker that has seen nothing yet (takes the first number as it comes).
    pub fn new() -> Self {
        SequenceTracker::default()
    }

    /// The number expected next, once one was seen.
    pub fn expected(&self) -> Option<u32> {
        self.next
    }

    fn compare(&mut self, seen: u32, next_after: u32) -> SequenceCheck {
        let Some(expected) = self.next else {
            self.next = Some(next_after);
            return SequenceCheck::InOrder;
        };
        let ahead = distance(expected, seen);
        if ahead == 0 {
            self.next = Some(next_after);
            SequenceCheck::InOrder
        } else if ahead < u32::MAX / 2 {
            let skipped = ahead.min(Self::MAX_GAP);
            let mut missing = Vec::with_capacity(skipped as usize);
            let mut n = seen;
            for _ in 0..skipped {
                n = if n == 1 { u32::MAX } else { n - 1 };
                missing.push(n);
            }
            missing.reverse();
            self.next = Some(next_after);
            SequenceCheck::Gap(missing)
        } else {
            SequenceCheck::Stale
        }
    }

    /// A NotificationMessage with data and sequence number `seq`.
    pub fn notification(&mut self, seq: u32) -> SequenceCheck {
        self.compare(seq, successor(seq))
    }

    /// A keep-alive announcing `next` as the next sequence number.
    pub fn keep_alive(&mut self, next: u32) -> SequenceCheck {
        self.compare(next, next)
    }

    /// Forget the history (the subscription was created anew).
    pub fn reset(&mut self) {
        self.next = None;
    }
}

struct Item {
    spec: MonitoredItemSpec,
    client_handle: u32,
}

struct Sub {
    server_id: u32,
    params: SubscriptionParams,
    revised_interval: Duration,
    revised_keep_alive: u32,
    items: Vec<Item>,
    tracker: SequenceTracker,
    sender: mpsc::UnboundedSender<DataChange>,
}

/// The session's subscriptions, by our local id.
#[derive(Default)]
pub(crate) struct Registry {
    subs: HashMap<u32, Sub>,
    acks: Vec<SubscriptionAcknowledgement>,
    next_local: u32,
    next_handle: u32,
}

impl Registry {
    fn by_server_id(&mut self, server_id: u32) -> Option<&mut Sub> {
        self.subs.values_mut().find(|s| s.server_id == server_id)
    }

    /// How long a Publish may wait: the longest keep-alive period of any subscription.
    fn publish_wait(&self) -> Duration {
        self.subs
            .values()
            .map(|s| s.revised_interval.saturating_mul(s.revised_keep_alive.max(1)))
            .max()
            .unwrap_or(Duration::from_secs(5))
    }

    /// Ends every stream.
    pub fn close_all(&mut self) {
        self.subs.clear();
        self.acks.clear();
    }
}

/// A stream of the data changes of one subscription. Dropping it deletes the subscription on the server (in the
/// background, when a runtime is available).
#[derive(Debug)]
pub struct SubscriptionStream {
    local_id: u32,
    receiver: mpsc::UnboundedReceiver<DataChange>,
    session: Weak<Inner>,
}

impl SubscriptionStream {
    /// The server's id of the subscription now (it changes when a reconnect had to create it anew).
    pub fn server_id(&self) -> Option<u32> {
        let inner = self.session.upgrade()?;
        let id = inner.subscriptions.lock().subs.get(&self.local_id).map(|s| s.server_id);
        id
    }
}

impl futures_core::Stream for SubscriptionStream {
    type Item = DataChange;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<DataChange>> {
        self.receiver.poll_recv(cx)
    }
}

impl Drop for SubscriptionStream {
    fn drop(&mut self) {
        let Some(inner) = self.session.upgrade() else { return };
        let removed = inner.subscriptions.lock().subs.remove(&self.local_id);
        let (Some(sub), Ok(runtime)) = (removed, tokio::runtime::Handle::try_current()) else { return };
        runtime.spawn(async move {
            let request = opcua_types::DeleteSubscriptionsRequest {
                request_header: RequestHeader::default(),
                subscription_ids: Some(vec![sub.server_id]),
            };
            if let Err(e) = inner.send(request, None).await {
                tracing::debug!(parent: &inner.span, error = %e, "deleting a dropped subscription failed");
            }
        });
    }
}

/// Creates the subscription and its items on `client`; returns the server id and revised values.
async fn create_on_server(
    inner: &Inner,
    client: &Client,
    params: &SubscriptionParams,
    items: &[Item],
) -> Result<(u32, Duration, u32)> {
    let request = opcua_types::CreateSubscriptionRequest {
        request_header: RequestHeader::default(),
        requested_publishing_interval: params.publishing_interval.as_secs_f64() * 1000.0,
        requested_lifetime_count: params.lifetime_count,
        requested_max_keep_alive_count: params.max_keep_alive_count,
        max_notifications_per_publish: params.max_notifications_per_publish,
        publishing_enabled: true,
        priority: params.priority,
    };
    let created = inner.send_on(client, request, None).await?;
    let interval = Duration::from_secs_f64((created.revised_publishing_interval / 1000.0).clamp(0.001, 3600.0));
    let requests = items
        .iter()
        .map(|item| MonitoredItemCreateRequest {
            item_to_monitor: ReadValueId {
                node_id: item.spec.node_id.clone(),
                attribute_id: item.spec.attribute_id as u32,
                ..Default::default()
            },
            monitoring_mode: MonitoringMode::Reporting,
            requested_parameters: MonitoringParameters {
                client_handle: item.client_handle,
                sampling_interval: item.spec.sampling_interval.map_or(-1.0, |d| d.as_secs_f64() * 1000.0),
                filter: ExtensionObject::null(),
                queue_size: item.spec.queue_size,
                discard_oldest: item.spec.discard_oldest,
            },
        })
        .collect::<Vec<_>>();
    let count = requests.len();
    let request = opcua_types::CreateMonitoredItemsRequest {
        request_header: RequestHeader::default(),
        subscription_id: created.subscription_id,
        timestamps_to_return: TimestampsToReturn::Both,
        items_to_create: Some(requests),
    };
    let results = inner.send_on(client, request, None).await.and_then(|r| {
        let results = r.results.unwrap_or_default();
        if results.len() != count {
            return Err(Error::Decoding(format!("{} monitored item results for {count} items", results.len())));
        }
        match results.iter().find(|r| r.status_code.is_bad()) {
            Some(bad) => Err(Error::Remote { status: bad.status_code, reason: "CreateMonitoredItems".into() }),
            None => Ok(()),
        }
    });
    if let Err(e) = results {
        let delete = opcua_types::DeleteSubscriptionsRequest {
            request_header: RequestHeader::default(),
            subscription_ids: Some(vec![created.subscription_id]),
        };
        let _ = inner.send_on(client, delete, None).await;
        return Err(e);
    }
    Ok((created.subscription_id, interval, created.revised_max_keep_alive_count))
}

impl Session {
    /// Creates a subscription monitoring `items` and returns the stream of their data changes. Every item must be
    /// accepted by the server (otherwise the subscription is deleted and the first bad status returned).
    pub async fn subscribe(
        &self,
        params: SubscriptionParams,
        items: Vec<MonitoredItemSpec>,
    ) -> Result<SubscriptionStream> {
        let inner = &self.inner;
        let items: Vec<Item> = {
            let mut registry = inner.subscriptions.lock();
            items
                .into_iter()
                .map(|spec| {
                    registry.next_handle = registry.next_handle.wrapping_add(1);
                    Item { spec, client_handle: registry.next_handle }
                })
                .collect()
        };
        let client = inner.connected_channel().await?;
        let (server_id, revised_interval, revised_keep_alive) =
            create_on_server(inner, &client, &params, &items).await?;
        // Unbounded: one publish loop serves every subscription of the session and must not stall on one slow
        // consumer. What arrives is bounded by the server (queue sizes, notifications per publish) and by the
        // consumer dropping the stream, which deletes the subscription.
        let (sender, receiver) = mpsc::unbounded_channel();
        let local_id = {
            let mut registry = inner.subscriptions.lock();
            registry.next_local = registry.next_local.wrapping_add(1);
            let local_id = registry.next_local;
            registry.subs.insert(
                local_id,
                Sub {
                    server_id,
                    params,
                    revised_interval,
                    revised_keep_alive,
                    items,
                    tracker: SequenceTracker::new(),
                    sender,
                },
            );
            local_id
        };
        tracing::debug!(parent: &inner.span, server_id, ?revised_interval, "subscription created");
        inner.publish_wake.notify_one();
        Ok(SubscriptionStream { local_id, receiver, session: Arc::downgrade(inner) })
    }
}

/// After a new session replaced a lost one: TransferSubscriptions for every subscription we had, and where that
/// fails (the server lost them too), create them again with the same items and client handles.
pub(crate) async fn recover(inner: &Inner, client: &Client) -> Result<()> {
    let ids: Vec<(u32, u32)> = inner.subscriptions.lock().subs.iter().map(|(local, s)| (*local, s.server_id)).collect();
    if ids.is_empty() {
        return Ok(());
    }
    let request = TransferSubscriptionsRequest {
        request_header: RequestHeader::default(),
        subscription_ids: Some(ids.iter().map(|(_, server)| *server).collect()),
        send_initial_values: true,
    };
    let transferred = match inner.send_on(client, request, None).await {
        Ok(response) => response.results.unwrap_or_default(),
        Err(e) if channel_lost(&e) => return Err(e),
        Err(e) => {
            tracing::debug!(parent: &inner.span, error = %e, "TransferSubscriptions refused; creating them anew");
            Vec::new()
        }
    };
    for (i, (local, _)) in ids.iter().enumerate() {
        if transferred.get(i).is_some_and(|r| r.status_code.is_good()) {
            tracing::info!(parent: &inner.span, local, "subscription transferred to the new session");
            continue;
        }
        // Take what we need out of the registry: the lock is not held across the await.
        let Some((params, items)) = inner.subscriptions.lock().subs.get(local).map(|s| {
            let items = s.items.iter().map(|i| Item { spec: i.spec.clone(), client_handle: i.client_handle }).collect();
            (s.params.clone(), items)
        }) else {
            continue;
        };
        let items: Vec<Item> = items;
        let (server_id, interval, keep_alive) = create_on_server(inner, client, &params, &items).await?;
        if let Some(sub) = inner.subscriptions.lock().subs.get_mut(local) {
            sub.server_id = server_id;
            sub.revised_interval = interval;
            sub.revised_keep_alive = keep_alive;
            sub.tracker.reset();
        }
        tracing::info!(parent: &inner.span, local, server_id, "subscription created anew after the session was lost");
    }
    // Acknowledgements for the old session's subscriptions mean nothing to the new one.
    inner.subscriptions.lock().acks.clear();
    Ok(())
}

/// Delivers the data changes of `message` to subscription `server_id`'s stream.
fn deliver(inner: &Inner, server_id: u32, message: &NotificationMessage) {
    let mut registry = inner.subscriptions.lock();
    let Some(sub) = registry.by_server_id(server_id) else { return };
    for data in message.notification_data.iter().flatten() {
        if let Some(changes) = data.inner_as::<DataChangeNotification>() {
            for item in changes.monitored_items.iter().flatten() {
                let Some(known) = sub.items.iter().find(|i| i.client_handle == item.client_handle) else { continue };
                let change = DataChange {
                    client_handle: item.client_handle,
                    node_id: known.spec.node_id.clone(),
                    value: item.value.clone(),
                };
                // A dropped stream is removed from the registry by its Drop; a failed send only means it is going.
                let _ = sub.sender.send(change);
            }
        } else if let Some(status) = data.inner_as::<StatusChangeNotification>() {
            tracing::info!(parent: &inner.span, server_id, status = %status.status, "subscription status changed");
        }
    }
}

fn acknowledge(inner: &Inner, server_id: u32, sequence_number: u32) {
    let mut registry = inner.subscriptions.lock();
    if registry.by_server_id(server_id).is_some() {
        registry.acks.push(SubscriptionAcknowledgement { subscription_id: server_id, sequence_number });
    }
}

/// One Publish response: sequence check, Republish for a gap, delivery, acknowledgement.
async fn handle_publish(inner: &Inner, client: &Client, response: PublishResponse) {
    let server_id = response.subscription_id;
    let message = response.notification_message;
    let is_keep_alive = message.notification_data.as_ref().is_none_or(|d| d.is_empty());
    let check = {
        let mut registry = inner.subscriptions.lock();
        let Some(sub) = registry.by_server_id(server_id) else {
            drop(registry);
            // Not ours (any more): acknowledge so the server can free it, and move on.
            if !is_keep_alive {
                inner.subscriptions.lock().acks.push(SubscriptionAcknowledgement {
                    subscription_id: server_id,
                    sequence_number: message.sequence_number,
                });
            }
            return;
        };
        if is_keep_alive {
            sub.tracker.keep_alive(message.sequence_number)
        } else {
            sub.tracker.notification(message.sequence_number)
        }
    };
    if let SequenceCheck::Gap(missing) = &check {
        tracing::info!(parent: &inner.span, server_id, missing = ?missing, "sequence gap; republishing");
        let available = response.available_sequence_numbers.unwrap_or_default();
        for seq in missing {
            // Only ask for what the server says it still has, when it says anything.
            if !available.is_empty() && !available.contains(seq) {
                tracing::warn!(parent: &inner.span, server_id, seq, "notification lost: no longer available");
                continue;
            }
            let request = RepublishRequest {
                request_header: RequestHeader::default(),
                subscription_id: server_id,
                retransmit_sequence_number: *seq,
            };
            match inner.send_on(client, request, None).await {
                Ok(republished) => {
                    deliver(inner, server_id, &republished.notification_message);
                    acknowledge(inner, server_id, *seq);
                }
                Err(e) => tracing::warn!(parent: &inner.span, server_id, seq, error = %e, "republish failed"),
            }
        }
    }
    if is_keep_alive {
        return;
    }
    if check != SequenceCheck::Stale {
        deliver(inner, server_id, &message);
    }
    acknowledge(inner, server_id, message.sequence_number);
}

type PublishOutcome = (Vec<SubscriptionAcknowledgement>, Arc<Client>, Result<PublishResponse>);

/// Keeps Publish requests outstanding while there are subscriptions and the session is connected.
pub(crate) async fn publish_loop(inner: Arc<Inner>) {
    let mut in_flight = FuturesUnordered::new();
    let mut target = inner.options.publish_requests.max(1);
    let mut state = inner.state.subscribe();
    loop {
        let (has_subs, wait) = {
            let registry = inner.subscriptions.lock();
            (!registry.subs.is_empty(), registry.publish_wait())
        };
        let connected = *state.borrow_and_update() == ConnectionState::Connected;
        if !has_subs || !connected {
            if in_flight.is_empty() {
                tokio::select! {
                    () = inner.publish_wake.notified() => {}
                    changed = state.changed() => if changed.is_err() { return },
                }
                continue;
            }
        } else {
            let client = inner.channel.lock().clone();
            while in_flight.len() < target {
                let acks = std::mem::take(&mut inner.subscriptions.lock().acks);
                let inner = inner.clone();
                let client = client.clone();
                // The server holds a Publish until it has a notification or a keep-alive is due: wait that long
                // plus the ordinary timeout.
                let timeout = wait + client.timeout();
                in_flight.push(async move {
                    let request = PublishRequest {
                        request_header: RequestHeader::default(),
                        subscription_acknowledgements: Some(acks.clone()),
                    };
                    let result = inner.send_on(&client, request, Some(timeout)).await;
                    (acks, client, result)
                });
            }
        }
        tokio::select! {
            Some((acks, client, result)) = in_flight.next() => {
                let (acks, client, result): PublishOutcome = (acks, client, result);
                on_publish_result(&inner, &client, acks, result, &mut target).await;
            }
            () = inner.publish_wake.notified() => {}
            changed = state.changed() => if changed.is_err() { return },
        }
    }
}

async fn on_publish_result(
    inner: &Arc<Inner>,
    client: &Client,
    acks: Vec<SubscriptionAcknowledgement>,
    result: Result<PublishResponse>,
    target: &mut usize,
) {
    match result {
        Ok(response) => {
            if let Some(results) = &response.results {
                for (ack, status) in acks.iter().zip(results) {
                    if status.is_bad() && *status != StatusCode::BadSequenceNumberUnknown {
                        tracing::debug!(parent: &inner.span, ?ack, %status, "acknowledgement refused");
                    }
                }
            }
            handle_publish(inner, client, response).await;
        }
        Err(e) => {
            // The acknowledgements may not have arrived: send them again (the server answers
            // BadSequenceNumberUnknown for those it already had, which is harmless).
            {
                let mut registry = inner.subscriptions.lock();
                let known: Vec<u32> = registry.subs.values().map(|s| s.server_id).collect();
                registry.acks.extend(acks.into_iter().filter(|a| known.contains(&a.subscription_id)));
            }
            match e.status_code() {
                StatusCode::BadTimeout if !channel_lost(&e) => {}
                StatusCode::BadTooManyPublishRequests => {
                    *target = target.saturating_sub(1).max(1);
                    tracing::debug!(parent: &inner.span, target = *target, "server wants fewer Publish requests");
                }
                StatusCode::BadNoSubscription => tokio::time::sleep(Duration::from_millis(200)).await,
                _ => {
                    tracing::debug!(parent: &inner.span, error = %e, "publish failed");
                    // Channel trouble is the supervisor's: pause so a dead channel does not spin this loop.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_keep_alive_and_gaps() {
        let mut t = SequenceTracker::new();
        assert_eq!(t.keep_alive(1), SequenceCheck::InOrder, "the first keep-alive announces 1");
        assert_eq!(t.notification(1), SequenceCheck::InOrder);
        assert_eq!(t.notification(2), SequenceCheck::InOrder);
        assert_eq!(t.keep_alive(3), SequenceCheck::InOrder, "a keep-alive does not consume 3");
        assert_eq!(t.notification(3), SequenceCheck::InOrder);
        assert_eq!(t.notification(6), SequenceCheck::Gap(vec![4, 5]));
        assert_eq!(t.expected(), Some(7));
        assert_eq!(t.notification(5), SequenceCheck::Stale, "republished or duplicate");
        assert_eq!(t.notification(6), SequenceCheck::Stale);
        // A keep-alive that announces 9 means 7 and 8 were lost.
        assert_eq!(t.keep_alive(9), SequenceCheck::Gap(vec![7, 8]));
        assert_eq!(t.notification(9), SequenceCheck::InOrder);
    }

    #[test]
    fn wraps_and_bounds() {
        let mut t = SequenceTracker::new();
        assert_eq!(t.notification(u32::MAX - 1), SequenceCheck::InOrder);
        assert_eq!(t.notification(u32::MAX), SequenceCheck::InOrder);
        assert_eq!(t.notification(1), SequenceCheck::InOrder, "0 is skipped when wrapping");
        let mut t = SequenceTracker::new();
        t.notification(u32::MAX - 1);
        assert_eq!(t.notification(2), SequenceCheck::Gap(vec![u32::MAX, 1]));
        // Huge gaps report only the newest MAX_GAP numbers.
        let mut t = SequenceTracker::new();
        t.notification(1);
        match t.notification(1000) {
            SequenceCheck::Gap(missing) => {
                assert_eq!(missing.len(), SequenceTracker::MAX_GAP as usize);
                assert_eq!(missing.last(), Some(&999));
            }
            other => panic!("expected a gap, got {other:?}"),
        }
        t.reset();
        assert_eq!(t.notification(5), SequenceCheck::InOrder, "after a reset anything goes");
    }

    #[test]
    fn distance_in_the_cycle() {
        assert_eq!(distance(5, 5), 0);
        assert_eq!(distance(5, 8), 3);
        assert_eq!(distance(u32::MAX, 1), 1);
        assert_eq!(distance(u32::MAX - 1, 2), 3);
        assert!(distance(8, 5) > u32::MAX / 2);
    }
}
