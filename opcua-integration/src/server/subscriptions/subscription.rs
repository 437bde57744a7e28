//! One subscription (Part 4 §5.13.1): its publishing timer, counters, sequence numbers, retransmission queue and
//! monitored items.
//!
//! The state machine of §5.13.1.2 is kept in the form of its counters: on each publishing timer expiry
//! ([`Subscription::on_publishing_timer`]) the subscription answers a queued Publish request with notifications,
//! with a keep-alive (first cycle, or after maxKeepAliveCount cycles without notifications), or goes Late when it
//! has something to say and no request to say it with; a Late subscription is served as soon as a request arrives.
//! The lifetime counter counts consecutive cycles without a Publish request; at the lifetime count the subscription
//! expires.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use opcua_types::{DateTime, MonitoredItemNotification, NotificationMessage, StatusCode};

use super::monitored_item::MonitoredItem;
use super::{after, context_at, millis, Owner, Sampler, SubscriptionLimits};
use crate::channel::secure_channel::Now;

/// The state of §5.13.1.2 (Creating and Closed are not observable: a subscription exists between them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscriptionState {
    /// Publishing normally.
    Normal,
    /// The publishing timer expired with something to send and no Publish request to send it with.
    Late,
    /// Nothing to send; counting down to the next keep-alive.
    KeepAlive,
}

/// Revised subscription parameters (§5.13.2.2).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Revised {
    /// Publishing interval in milliseconds.
    pub publishing_interval_ms: f64,
    /// Lifetime count, at least three times the keep-alive count.
    pub lifetime_count: u32,
    /// Keep-alive count.
    pub max_keep_alive_count: u32,
}

impl Revised {
    /// Revises what a client asked for: the interval into the limits (NaN or <= 0 becomes the minimum), the
    /// keep-alive count into 1..=max, the lifetime count to at least three keep-alive counts and at most the
    /// limit, lowering the keep-alive count if the limit leaves no room for three.
    pub fn new(interval_ms: f64, lifetime_count: u32, keep_alive_count: u32, limits: &SubscriptionLimits) -> Self {
        let min = limits.min_publishing_interval_ms;
        let max = limits.max_publishing_interval_ms.max(min);
        let publishing_interval_ms = if interval_ms.is_nan() { min } else { interval_ms.clamp(min, max) };
        let max_lifetime = limits.max_lifetime_count.max(3);
        let mut keep_alive = keep_alive_count.clamp(1, limits.max_keep_alive_count.max(1));
        let lifetime = lifetime_count.max(keep_alive.saturating_mul(3)).min(max_lifetime);
        if lifetime < keep_alive.saturating_mul(3) {
            keep_alive = (lifetime / 3).max(1);
        }
        Revised { publishing_interval_ms, lifetime_count: lifetime, max_keep_alive_count: keep_alive }
    }
}

/// What a publishing timer expiry asks of the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tick {
    /// Nothing to send now.
    Idle,
    /// Answer the oldest queued Publish request with notifications.
    Notifications,
    /// Answer the oldest queued Publish request with a keep-alive.
    KeepAlive,
    /// The lifetime count passed without a Publish request: delete the subscription and tell the session.
    Expired,
}

/// A subscription.
#[derive(Clone, Debug)]
pub struct Subscription {
    id: u32,
    pub(crate) owner: Owner,
    revised: Revised,
    max_notifications: usize,
    publishing_enabled: bool,
    priority: u8,
    state: SubscriptionState,
    keep_alive_counter: u32,
    /// Consecutive publishing cycles without a Publish request.
    lifetime_counter: u32,
    message_sent: bool,
    more_notifications: bool,
    late_since: Option<Instant>,
    next_publish: Instant,
    next_sequence_number: u32,
    retransmission: VecDeque<NotificationMessage>,
    retransmission_len: usize,
    pub(crate) items: BTreeMap<u32, MonitoredItem>,
    /// Orders queued values across items.
    stamp: u64,
}

impl Subscription {
    /// A new subscription owned by `owner`; its first publishing cycle ends one interval after `now`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u32,
        owner: Owner,
        revised: Revised,
        max_notifications_per_publish: u32,
        publishing_enabled: bool,
        priority: u8,
        limits: &SubscriptionLimits,
        now: Instant,
    ) -> Self {
        Subscription {
            id,
            owner,
            revised,
            max_notifications: max_notifications(max_notifications_per_publish, limits),
            publishing_enabled,
            priority,
            state: SubscriptionState::Normal,
            keep_alive_counter: revised.max_keep_alive_count,
            lifetime_counter: 0,
            message_sent: false,
            more_notifications: false,
            late_since: None,
            next_publish: after(now, millis(revised.publishing_interval_ms)),
            next_sequence_number: 1,
            retransmission: VecDeque::new(),
            retransmission_len: limits.retransmission_queue_len,
            items: BTreeMap::new(),
            stamp: 0,
        }
    }

    /// The server-wide unique id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The owning session.
    pub fn session_id(&self) -> &opcua_types::NodeId {
        &self.owner.session_id
    }

    /// The revised parameters.
    pub fn revised(&self) -> Revised {
        self.revised
    }

    /// The state of §5.13.1.2.
    pub fn state(&self) -> SubscriptionState {
        self.state
    }

    /// Whether notifications are published (keep-alives are sent either way).
    pub fn publishing_enabled(&self) -> bool {
        self.publishing_enabled
    }

    /// The client's priority, deciding which Late subscription a Publish request serves first.
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// The monitored items by id.
    pub fn items(&self) -> &BTreeMap<u32, MonitoredItem> {
        &self.items
    }

    /// When the publishing timer expires next.
    pub fn next_publish(&self) -> Instant {
        self.next_publish
    }

    /// The sequence numbers kept for Republish.
    pub fn available_sequence_numbers(&self) -> Vec<u32> {
        self.retransmission.iter().map(|m| m.sequence_number).collect()
    }

    /// Applies ModifySubscription; the next cycle ends one new interval from `now`.
    pub fn modify(
        &mut self,
        revised: Revised,
        max_notifications_per_publish: u32,
        priority: u8,
        limits: &SubscriptionLimits,
        now: Instant,
    ) {
        self.revised = revised;
        self.max_notifications = max_notifications(max_notifications_per_publish, limits);
        self.priority = priority;
        self.keep_alive_counter = self.keep_alive_counter.min(revised.max_keep_alive_count).max(1);
        self.lifetime_counter = 0;
        self.next_publish = after(now, millis(revised.publishing_interval_ms));
    }

    /// Applies SetPublishingMode.
    pub fn set_publishing_enabled(&mut self, enabled: bool) {
        self.publishing_enabled = enabled;
    }

    /// Whether some item has values that may be published.
    pub fn has_notifications(&self) -> bool {
        self.items.values().any(MonitoredItem::has_reportable)
    }

    /// Whether a Publish request that arrives now should be answered by this subscription at once: it is Late, or
    /// the last message left notifications behind (§5.13.1.2 transitions 5 and 10/11).
    pub fn wants_request(&self) -> bool {
        self.state == SubscriptionState::Late || (self.more_notifications && self.publishing_enabled)
    }

    /// Since when the subscription has been Late, for serving the longest-waiting first.
    pub fn late_since(&self) -> Option<Instant> {
        self.late_since
    }

    /// A Publish request reached the owning session: the client is alive.
    pub fn publish_received(&mut self) {
        self.lifetime_counter = 0;
    }

    /// What the engine should send when a request is available for this subscription now.
    pub fn answer(&self) -> Tick {
        if self.publishing_enabled && self.has_notifications() {
            Tick::Notifications
        } else {
            Tick::KeepAlive
        }
    }

    /// The publishing timer expired; `request_available` says whether the owning session has a Publish request
    /// queued. Restarts the timer.
    pub fn on_publishing_timer(&mut self, request_available: bool) -> Tick {
        let expired_at = self.next_publish;
        self.next_publish = after(self.next_publish, millis(self.revised.publishing_interval_ms));
        let available = self.publishing_enabled && self.has_notifications();
        if request_available {
            self.lifetime_counter = 0;
            if available {
                return Tick::Notifications;
            }
            if !self.message_sent {
                return Tick::KeepAlive;
            }
            self.keep_alive_counter = self.keep_alive_counter.saturating_sub(1);
            if self.keep_alive_counter == 0 {
                return Tick::KeepAlive;
            }
            self.state = SubscriptionState::KeepAlive;
            return Tick::Idle;
        }
        self.lifetime_counter = self.lifetime_counter.saturating_add(1);
        if self.lifetime_counter >= self.revised.lifetime_count {
            return Tick::Expired;
        }
        if self.state != SubscriptionState::Late {
            let keep_alive_due = if available || !self.message_sent {
                true
            } else {
                self.keep_alive_counter = self.keep_alive_counter.saturating_sub(1);
                self.keep_alive_counter == 0
            };
            if keep_alive_due {
                self.state = SubscriptionState::Late;
                self.late_since = Some(expired_at);
            } else {
                self.state = SubscriptionState::KeepAlive;
            }
        }
        Tick::Idle
    }

    /// Moves the timer to one interval after `now` (when a driver woke so late that the missed cycles are skipped).
    pub(crate) fn skip_to(&mut self, now: Instant) {
        self.next_publish = after(now, millis(self.revised.publishing_interval_ms));
    }

    fn sent(&mut self, keep_alive: bool) {
        self.message_sent = true;
        self.keep_alive_counter = self.revised.max_keep_alive_count;
        self.lifetime_counter = 0;
        self.late_since = None;
        self.state = if keep_alive { SubscriptionState::KeepAlive } else { SubscriptionState::Normal };
    }

    fn take_sequence_number(&mut self) -> u32 {
        let n = self.next_sequence_number;
        // Sequence numbers wrap to 1: 0 is never used (Part 4 §7.38).
        self.next_sequence_number = if n == u32::MAX { 1 } else { n + 1 };
        n
    }

    /// Packs up to maxNotificationsPerPublish queued values, oldest first across items, into the next
    /// NotificationMessage and keeps it for Republish. Returns the message and whether values were left behind.
    pub fn build_notification(&mut self, publish_time: DateTime) -> Option<(NotificationMessage, bool)> {
        let mut stamps: Vec<u64> = self.items.values().flat_map(|i| i.reportable_stamps()).collect();
        if stamps.is_empty() {
            return None;
        }
        stamps.sort_unstable();
        let take = stamps.len().min(self.max_notifications);
        let max_stamp = stamps.get(take.saturating_sub(1)).copied().unwrap_or(u64::MAX);
        let mut taken = Vec::with_capacity(take);
        for item in self.items.values_mut() {
            if item.has_reportable() {
                item.take_up_to(max_stamp, &mut taken);
            }
        }
        taken.sort_by_key(|(stamp, _)| *stamp);
        let notifications: Vec<MonitoredItemNotification> = taken.into_iter().map(|(_, n)| n).collect();
        let more = self.has_notifications();
        let message =
            NotificationMessage::data_change(self.take_sequence_number(), publish_time, notifications, vec![]);
        if self.retransmission_len > 0 {
            while self.retransmission.len() >= self.retransmission_len {
                self.retransmission.pop_front();
            }
            self.retransmission.push_back(message.clone());
        }
        self.more_notifications = more;
        self.sent(false);
        Some((message, more))
    }

    /// A keep-alive: no notifications, carrying the sequence number the next NotificationMessage will have
    /// (§5.13.1.1), which it does not consume.
    pub fn build_keep_alive(&mut self, publish_time: DateTime) -> NotificationMessage {
        self.more_notifications = false;
        self.sent(true);
        NotificationMessage::keep_alive(self.next_sequence_number, publish_time)
    }

    /// A StatusChangeNotification (expiry, transfer), consuming a sequence number.
    pub fn build_status_change(&mut self, publish_time: DateTime, status: StatusCode) -> NotificationMessage {
        NotificationMessage::status_change(self.take_sequence_number(), publish_time, status)
    }

    /// Removes an acknowledged message from the retransmission queue: Good, or BadSequenceNumberUnknown.
    pub fn acknowledge(&mut self, sequence_number: u32) -> StatusCode {
        match self.retransmission.iter().position(|m| m.sequence_number == sequence_number) {
            Some(index) => {
                self.retransmission.remove(index);
                StatusCode::Good
            }
            None => StatusCode::BadSequenceNumberUnknown,
        }
    }

    /// The kept message with `sequence_number` (Republish).
    pub fn republish(&self, sequence_number: u32) -> Option<&NotificationMessage> {
        self.retransmission.iter().find(|m| m.sequence_number == sequence_number)
    }

    /// Samples every item that is due at `now`, with the owner's rights.
    pub fn sample_due(&mut self, now: Now, sampler: &dyn Sampler) {
        let ctx = context_at(&self.owner, now);
        let stamp = &mut self.stamp;
        for item in self.items.values_mut() {
            item.sample_if_due(&ctx, sampler, stamp);
        }
    }

    /// Samples one item if it is due (after CreateMonitoredItems or SetMonitoringMode).
    pub(crate) fn sample_item(&mut self, id: u32, now: Now, sampler: &dyn Sampler) {
        let ctx = context_at(&self.owner, now);
        if let Some(item) = self.items.get_mut(&id) {
            item.sample_if_due(&ctx, sampler, &mut self.stamp);
        }
    }

    /// Queues every Reporting item's last value again (TransferSubscriptions with sendInitialValues).
    pub fn requeue_last_values(&mut self) {
        let stamp = &mut self.stamp;
        for item in self.items.values_mut() {
            item.requeue_last(stamp);
        }
    }

    /// The earliest sampling deadline of its items.
    pub fn next_sample(&self) -> Option<Instant> {
        self.items.values().filter_map(MonitoredItem::next_sample).min()
    }
}

fn max_notifications(requested: u32, limits: &SubscriptionLimits) -> usize {
    let cap = if limits.max_notifications_per_publish == 0 { u32::MAX } else { limits.max_notifications_per_publish };
    let n = if requested == 0 { cap } else { requested.min(cap) };
    usize::try_from(n).unwrap_or(usize::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_keeps_lifetime_at_least_three_keep_alives() {
        let limits = SubscriptionLimits::default();
        let r = Revised::new(1000.0, 5, 10, &limits);
        assert_eq!((r.publishing_interval_ms, r.lifetime_count, r.max_keep_alive_count), (1000.0, 30, 10));
        let r = Revised::new(0.0, 0, 0, &limits);
        assert_eq!(r.publishing_interval_ms, limits.min_publishing_interval_ms);
        assert_eq!((r.lifetime_count, r.max_keep_alive_count), (3, 1));
        let r = Revised::new(f64::NAN, u32::MAX, u32::MAX, &limits);
        assert_eq!(r.publishing_interval_ms, limits.min_publishing_interval_ms);
        assert_eq!(r.lifetime_count, limits.max_lifetime_count);
        assert!(r.lifetime_count >= 3 * r.max_keep_alive_count);
        let r = Revised::new(1e15, 100, 10, &limits);
        assert_eq!(r.publishing_interval_ms, limits.max_publishing_interval_ms);
        let tight = SubscriptionLimits { max_lifetime_count: 30, max_keep_alive_count: 100, ..limits };
        let r = Revised::new(100.0, 1000, 50, &tight);
        assert_eq!((r.lifetime_count, r.max_keep_alive_count), (30, 10));
    }

    #[test]
    fn sequence_numbers_wrap_to_one() {
        let limits = SubscriptionLimits::default();
        let owner = Owner {
            session_id: opcua_types::NodeId::new(1, 1),
            principal: std::sync::Arc::new(crate::server::access::Principal::anonymous()),
        };
        let mut s =
            Subscription::new(1, owner, Revised::new(100.0, 30, 10, &limits), 0, true, 0, &limits, Instant::now());
        s.next_sequence_number = u32::MAX;
        assert_eq!(s.take_sequence_number(), u32::MAX);
        assert_eq!(s.take_sequence_number(), 1);
    }
}
