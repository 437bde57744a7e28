//! [`SubscriptionEngine`]: every subscription of the server and the services on them (Part 4 §5.12, §5.13).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use opcua_types::{
    CreateMonitoredItemsRequest, CreateMonitoredItemsResponse, CreateSubscriptionRequest, CreateSubscriptionResponse,
    DeleteMonitoredItemsRequest, DeleteMonitoredItemsResponse, DeleteSubscriptionsRequest, DeleteSubscriptionsResponse,
    ExtensionObject, ModifyMonitoredItemsRequest, ModifyMonitoredItemsResponse, ModifySubscriptionRequest,
    ModifySubscriptionResponse, MonitoredItemCreateResult, MonitoredItemModifyResult, NodeId, NotificationMessage,
    PublishRequest, PublishResponse, RepublishRequest, RepublishResponse, RequestHeader, ResponseHeader,
    SetMonitoringModeRequest, SetMonitoringModeResponse, SetPublishingModeRequest, SetPublishingModeResponse,
    StatusCode, TimestampsToReturn, TransferResult, TransferSubscriptionsRequest, TransferSubscriptionsResponse,
};

use super::monitored_item::{ItemSettings, MonitoredItem};
use super::publish::{PendingPublish, PublishQueue};
use super::subscription::{Revised, Subscription, Tick};
use super::{after, millis, Owner, Sampler, SubscriptionLimits};
use crate::channel::secure_channel::Now;
use crate::server::access::{Principal, RequestContext, UserRole};

/// A Publish answer: the driver's token and the response, or the status of a ServiceFault.
pub type PublishOutcome = (u64, Result<PublishResponse, StatusCode>);

/// Bounds the publishing cycles one [`SubscriptionEngine::handle_timeout`] catches up on, so a driver that woke
/// very late cannot keep it busy; the rest are skipped.
const MAX_CYCLES_PER_TIMEOUT: usize = 10_000;

/// What the engine keeps per session.
#[derive(Debug, Default)]
struct SessionState {
    publish: PublishQueue,
    /// Status changes (expiry, transfer) of subscriptions the session no longer owns, for its next Publish.
    status_messages: VecDeque<(u32, NotificationMessage)>,
}

impl SessionState {
    /// Keeps a status change for the next Publish. Bounded: a session that never publishes while subscriptions are
    /// transferred away from it again and again would otherwise grow without end; the oldest goes first.
    fn push_status(&mut self, message: (u32, NotificationMessage), limit: usize) {
        while self.status_messages.len() >= limit.max(1) {
            self.status_messages.pop_front();
        }
        self.status_messages.push_back(message);
    }
}

/// The server's subscriptions, sans-IO: time comes in as [`Now`], values through a [`Sampler`], Publish answers go
/// out through [`SubscriptionEngine::poll_response`].
#[derive(Debug)]
pub struct SubscriptionEngine {
    limits: SubscriptionLimits,
    subscriptions: BTreeMap<u32, Subscription>,
    sessions: HashMap<NodeId, SessionState>,
    next_subscription_id: u32,
    next_item_id: u32,
    total_items: usize,
    responses: VecDeque<PublishOutcome>,
}

impl Default for SubscriptionEngine {
    fn default() -> Self {
        SubscriptionEngine::new(SubscriptionLimits::default())
    }
}

fn header(ctx: &RequestContext, request: &RequestHeader) -> ResponseHeader {
    ResponseHeader::new_timestamped_service_result(ctx.now.utc, request, StatusCode::Good)
}

/// The ids of a request list: BadNothingToDo when empty, BadTooManyOperations beyond the limit.
fn operations<'a, T>(list: &'a Option<Vec<T>>, limits: &SubscriptionLimits) -> Result<&'a [T], StatusCode> {
    let list = list.as_deref().unwrap_or_default();
    if list.is_empty() {
        return Err(StatusCode::BadNothingToDo);
    }
    if list.len() > limits.max_operations_per_request {
        return Err(StatusCode::BadTooManyOperations);
    }
    Ok(list)
}

fn owned<'a>(
    subscriptions: &'a mut BTreeMap<u32, Subscription>,
    session_id: &NodeId,
    id: u32,
) -> Result<&'a mut Subscription, StatusCode> {
    subscriptions.get_mut(&id).filter(|s| s.session_id() == session_id).ok_or(StatusCode::BadSubscriptionIdInvalid)
}

fn check_timestamps(timestamps: TimestampsToReturn) -> Result<(), StatusCode> {
    match timestamps {
        TimestampsToReturn::Invalid => Err(StatusCode::BadTimestampsToReturnInvalid),
        _ => Ok(()),
    }
}

impl SubscriptionEngine {
    /// An engine with no subscriptions.
    pub fn new(limits: SubscriptionLimits) -> Self {
        SubscriptionEngine {
            limits,
            subscriptions: BTreeMap::new(),
            sessions: HashMap::new(),
            next_subscription_id: 1,
            next_item_id: 1,
            total_items: 0,
            responses: VecDeque::new(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &SubscriptionLimits {
        &self.limits
    }

    /// A subscription by id, whoever owns it.
    pub fn subscription(&self, id: u32) -> Option<&Subscription> {
        self.subscriptions.get(&id)
    }

    /// The ids of the subscriptions `session_id` owns.
    pub fn subscriptions_of(&self, session_id: &NodeId) -> Vec<u32> {
        self.subscriptions.values().filter(|s| s.session_id() == session_id).map(Subscription::id).collect()
    }

    /// How many subscriptions exist.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    /// How many monitored items exist, server-wide.
    pub fn monitored_item_count(&self) -> usize {
        self.total_items
    }

    /// How many Publish requests `session_id` has queued.
    pub fn queued_publish_requests(&self, session_id: &NodeId) -> usize {
        self.sessions.get(session_id).map_or(0, |s| s.publish.len())
    }

    fn allocate_subscription_id(&mut self) -> u32 {
        // Bounded: fewer subscriptions exist than ids, so a free one is found.
        loop {
            let id = self.next_subscription_id;
            self.next_subscription_id = self.next_subscription_id.checked_add(1).unwrap_or(1);
            if id != 0 && !self.subscriptions.contains_key(&id) {
                return id;
            }
        }
    }

    fn owns_any(&self, session_id: &NodeId) -> bool {
        self.subscriptions.values().any(|s| s.session_id() == session_id)
    }

    /// CreateSubscription (§5.13.2).
    pub fn create_subscription(
        &mut self,
        ctx: &RequestContext,
        request: &CreateSubscriptionRequest,
    ) -> Result<CreateSubscriptionResponse, StatusCode> {
        let owned = self.subscriptions.values().filter(|s| s.session_id() == &ctx.session_id).count();
        if owned >= self.limits.max_subscriptions_per_session
            || self.subscriptions.len() >= self.limits.max_subscriptions
        {
            return Err(StatusCode::BadTooManySubscriptions);
        }
        let revised = Revised::new(
            request.requested_publishing_interval,
            request.requested_lifetime_count,
            request.requested_max_keep_alive_count,
            &self.limits,
        );
        let id = self.allocate_subscription_id();
        let owner = Owner { session_id: ctx.session_id.clone(), principal: ctx.principal.clone() };
        let subscription = Subscription::new(
            id,
            owner,
            revised,
            request.max_notifications_per_publish,
            request.publishing_enabled,
            request.priority,
            &self.limits,
            ctx.now.instant,
        );
        self.subscriptions.insert(id, subscription);
        self.sessions.entry(ctx.session_id.clone()).or_default();
        tracing::debug!(subscription = id, session = %ctx.session_id, interval = revised.publishing_interval_ms, "subscription created");
        Ok(CreateSubscriptionResponse {
            response_header: header(ctx, &request.request_header),
            subscription_id: id,
            revised_publishing_interval: revised.publishing_interval_ms,
            revised_lifetime_count: revised.lifetime_count,
            revised_max_keep_alive_count: revised.max_keep_alive_count,
        })
    }

    /// ModifySubscription (§5.13.3).
    pub fn modify_subscription(
        &mut self,
        ctx: &RequestContext,
        request: &ModifySubscriptionRequest,
    ) -> Result<ModifySubscriptionResponse, StatusCode> {
        let subscription = owned(&mut self.subscriptions, &ctx.session_id, request.subscription_id)?;
        let revised = Revised::new(
            request.requested_publishing_interval,
            request.requested_lifetime_count,
            request.requested_max_keep_alive_count,
            &self.limits,
        );
        subscription.modify(
            revised,
            request.max_notifications_per_publish,
            request.priority,
            &self.limits,
            ctx.now.instant,
        );
        Ok(ModifySubscriptionResponse {
            response_header: header(ctx, &request.request_header),
            revised_publishing_interval: revised.publishing_interval_ms,
            revised_lifetime_count: revised.lifetime_count,
            revised_max_keep_alive_count: revised.max_keep_alive_count,
        })
    }

    /// SetPublishingMode (§5.13.4).
    pub fn set_publishing_mode(
        &mut self,
        ctx: &RequestContext,
        request: &SetPublishingModeRequest,
    ) -> Result<SetPublishingModeResponse, StatusCode> {
        let ids = operations(&request.subscription_ids, &self.limits)?;
        let results = ids
            .iter()
            .map(|id| match owned(&mut self.subscriptions, &ctx.session_id, *id) {
                Ok(s) => {
                    s.set_publishing_enabled(request.publishing_enabled);
                    StatusCode::Good
                }
                Err(status) => status,
            })
            .collect();
        Ok(SetPublishingModeResponse {
            response_header: header(ctx, &request.request_header),
            results: Some(results),
            diagnostic_infos: None,
        })
    }

    /// DeleteSubscriptions (§5.13.8). Publish requests left queued on a session without subscriptions are
    /// answered BadNoSubscription.
    pub fn delete_subscriptions(
        &mut self,
        ctx: &RequestContext,
        request: &DeleteSubscriptionsRequest,
    ) -> Result<DeleteSubscriptionsResponse, StatusCode> {
        let ids = operations(&request.subscription_ids, &self.limits)?;
        let results = ids
            .iter()
            .map(|id| match owned(&mut self.subscriptions, &ctx.session_id, *id) {
                Ok(_) => {
                    self.remove_subscription(*id);
                    StatusCode::Good
                }
                Err(status) => status,
            })
            .collect();
        self.serve_session(&ctx.session_id, ctx.now);
        Ok(DeleteSubscriptionsResponse {
            response_header: header(ctx, &request.request_header),
            results: Some(results),
            diagnostic_infos: None,
        })
    }

    fn remove_subscription(&mut self, id: u32) -> Option<Subscription> {
        let removed = self.subscriptions.remove(&id)?;
        self.total_items = self.total_items.saturating_sub(removed.items.len());
        tracing::debug!(subscription = id, "subscription deleted");
        Some(removed)
    }

    /// CreateMonitoredItems (§5.12.2). Items in Sampling or Reporting mode are sampled at once, so a Reporting
    /// item's initial value goes out with the next NotificationMessage.
    pub fn create_monitored_items(
        &mut self,
        ctx: &RequestContext,
        request: &CreateMonitoredItemsRequest,
        sampler: &dyn Sampler,
    ) -> Result<CreateMonitoredItemsResponse, StatusCode> {
        let subscription = owned(&mut self.subscriptions, &ctx.session_id, request.subscription_id)?;
        let items = operations(&request.items_to_create, &self.limits)?;
        check_timestamps(request.timestamps_to_return)?;
        let publishing_interval = subscription.revised().publishing_interval_ms;
        let mut results = Vec::with_capacity(items.len());
        for create in items {
            let failed = |status_code| MonitoredItemCreateResult {
                status_code,
                monitored_item_id: 0,
                revised_sampling_interval: 0.0,
                revised_queue_size: 0,
                filter_result: ExtensionObject::null(),
            };
            if subscription.items.len() >= self.limits.max_monitored_items_per_subscription
                || self.total_items >= self.limits.max_monitored_items
            {
                results.push(failed(StatusCode::BadTooManyMonitoredItems));
                continue;
            }
            let status = sampler.check(ctx, &create.item_to_monitor);
            if !status.is_good() {
                results.push(failed(status));
                continue;
            }
            let settings = match ItemSettings::revise(
                &create.requested_parameters,
                &create.item_to_monitor,
                request.timestamps_to_return,
                publishing_interval,
                &self.limits,
                sampler,
            ) {
                Ok(settings) => settings,
                Err(status) => {
                    results.push(failed(status));
                    continue;
                }
            };
            // Ids are unique within the subscription; the server-wide counter makes them rarely collide anyway.
            let id = loop {
                let id = self.next_item_id;
                self.next_item_id = self.next_item_id.checked_add(1).unwrap_or(1);
                if id != 0 && !subscription.items.contains_key(&id) {
                    break id;
                }
            };
            results.push(MonitoredItemCreateResult {
                status_code: StatusCode::Good,
                monitored_item_id: id,
                revised_sampling_interval: settings.sampling_interval_ms,
                revised_queue_size: settings.queue_size,
                filter_result: ExtensionObject::null(),
            });
            let item = MonitoredItem::new(
                id,
                create.item_to_monitor.clone(),
                create.monitoring_mode,
                settings,
                ctx.now.instant,
            );
            subscription.items.insert(id, item);
            self.total_items = self.total_items.saturating_add(1);
            subscription.sample_item(id, ctx.now, sampler);
        }
        Ok(CreateMonitoredItemsResponse {
            response_header: header(ctx, &request.request_header),
            results: Some(results),
            diagnostic_infos: None,
        })
    }

    /// ModifyMonitoredItems (§5.12.3).
    pub fn modify_monitored_items(
        &mut self,
        ctx: &RequestContext,
        request: &ModifyMonitoredItemsRequest,
        sampler: &dyn Sampler,
    ) -> Result<ModifyMonitoredItemsResponse, StatusCode> {
        let subscription = owned(&mut self.subscriptions, &ctx.session_id, request.subscription_id)?;
        let items = operations(&request.items_to_modify, &self.limits)?;
        check_timestamps(request.timestamps_to_return)?;
        let publishing_interval = subscription.revised().publishing_interval_ms;
        let results = items
            .iter()
            .map(|modify| {
                let failed = |status_code| MonitoredItemModifyResult {
                    status_code,
                    revised_sampling_interval: 0.0,
                    revised_queue_size: 0,
                    filter_result: ExtensionObject::null(),
                };
                let Some(item) = subscription.items.get_mut(&modify.monitored_item_id) else {
                    return failed(StatusCode::BadMonitoredItemIdInvalid);
                };
                match ItemSettings::revise(
                    &modify.requested_parameters,
                    item.item_to_monitor(),
                    request.timestamps_to_return,
                    publishing_interval,
                    &self.limits,
                    sampler,
                ) {
                    Ok(settings) => {
                        let result = MonitoredItemModifyResult {
                            status_code: StatusCode::Good,
                            revised_sampling_interval: settings.sampling_interval_ms,
                            revised_queue_size: settings.queue_size,
                            filter_result: ExtensionObject::null(),
                        };
                        item.modify(settings, ctx.now.instant);
                        result
                    }
                    Err(status) => failed(status),
                }
            })
            .collect();
        Ok(ModifyMonitoredItemsResponse {
            response_header: header(ctx, &request.request_header),
            results: Some(results),
            diagnostic_infos: None,
        })
    }

    /// SetMonitoringMode (§5.12.4). Items enabled from Disabled are sampled at once.
    pub fn set_monitoring_mode(
        &mut self,
        ctx: &RequestContext,
        request: &SetMonitoringModeRequest,
        sampler: &dyn Sampler,
    ) -> Result<SetMonitoringModeResponse, StatusCode> {
        let subscription = owned(&mut self.subscriptions, &ctx.session_id, request.subscription_id)?;
        let ids = operations(&request.monitored_item_ids, &self.limits)?;
        let mut results = Vec::with_capacity(ids.len());
        for id in ids {
            match subscription.items.get_mut(id) {
                Some(item) => {
                    item.set_mode(request.monitoring_mode, ctx.now.instant);
                    subscription.sample_item(*id, ctx.now, sampler);
                    results.push(StatusCode::Good);
                }
                None => results.push(StatusCode::BadMonitoredItemIdInvalid),
            }
        }
        Ok(SetMonitoringModeResponse {
            response_header: header(ctx, &request.request_header),
            results: Some(results),
            diagnostic_infos: None,
        })
    }

    /// DeleteMonitoredItems (§5.12.6).
    pub fn delete_monitored_items(
        &mut self,
        ctx: &RequestContext,
        request: &DeleteMonitoredItemsRequest,
    ) -> Result<DeleteMonitoredItemsResponse, StatusCode> {
        let subscription = owned(&mut self.subscriptions, &ctx.session_id, request.subscription_id)?;
        let ids = operations(&request.monitored_item_ids, &self.limits)?;
        let mut results = Vec::with_capacity(ids.len());
        for id in ids {
            if subscription.items.remove(id).is_some() {
                self.total_items = self.total_items.saturating_sub(1);
                results.push(StatusCode::Good);
            } else {
                results.push(StatusCode::BadMonitoredItemIdInvalid);
            }
        }
        Ok(DeleteMonitoredItemsResponse {
            response_header: header(ctx, &request.request_header),
            results: Some(results),
            diagnostic_infos: None,
        })
    }

    /// Publish (§5.13.5): applies the acknowledgements and queues the request under the driver's `token`. The
    /// answer comes out of [`SubscriptionEngine::poll_response`]: at once when a subscription is Late or a status
    /// change waits, BadNoSubscription when the session has no subscription, else at a publishing cycle. Beyond
    /// the per-session limit the oldest queued request is answered BadTooManyPublishRequests; a request whose
    /// timeoutHint passes is answered BadTimeout.
    pub fn publish(&mut self, ctx: &RequestContext, token: u64, request: &PublishRequest) {
        let ack_results = request
            .subscription_acknowledgements
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|ack| match owned(&mut self.subscriptions, &ctx.session_id, ack.subscription_id) {
                Ok(s) => s.acknowledge(ack.sequence_number),
                Err(status) => status,
            })
            .collect();
        let timeout = request.request_header.timeout_hint;
        let deadline = (timeout > 0).then(|| after(ctx.now.instant, millis(f64::from(timeout))));
        let pending =
            PendingPublish { token, request_handle: request.request_header.request_handle, ack_results, deadline };
        let has_subscriptions = self.owns_any(&ctx.session_id);
        let session = self.sessions.entry(ctx.session_id.clone()).or_default();
        if !has_subscriptions && session.status_messages.is_empty() {
            self.responses.push_back((token, Err(StatusCode::BadNoSubscription)));
            return;
        }
        if let Some(oldest) = session.publish.push(pending, self.limits.max_publish_requests_per_session) {
            tracing::debug!(session = %ctx.session_id, "too many Publish requests");
            self.responses.push_back((oldest.token, Err(StatusCode::BadTooManyPublishRequests)));
        }
        for subscription in self.subscriptions.values_mut().filter(|s| s.session_id() == &ctx.session_id) {
            subscription.publish_received();
        }
        self.serve_session(&ctx.session_id, ctx.now);
    }

    /// Republish (§5.13.6): a NotificationMessage not yet acknowledged.
    pub fn republish(
        &mut self,
        ctx: &RequestContext,
        request: &RepublishRequest,
    ) -> Result<RepublishResponse, StatusCode> {
        let subscription = owned(&mut self.subscriptions, &ctx.session_id, request.subscription_id)?;
        let message =
            subscription.republish(request.retransmit_sequence_number).ok_or(StatusCode::BadMessageNotAvailable)?;
        Ok(RepublishResponse {
            response_header: header(ctx, &request.request_header),
            notification_message: message.clone(),
        })
    }

    /// TransferSubscriptions (§5.13.7): moves subscriptions to the calling session. Allowed when the caller is the
    /// same user (by name) as the current owner, or an Administrator; else BadUserAccessDenied. The old session
    /// gets a StatusChangeNotification GoodSubscriptionTransferred with its next Publish response.
    pub fn transfer_subscriptions(
        &mut self,
        ctx: &RequestContext,
        request: &TransferSubscriptionsRequest,
    ) -> Result<TransferSubscriptionsResponse, StatusCode> {
        let ids = operations(&request.subscription_ids, &self.limits)?;
        let mut results = Vec::with_capacity(ids.len());
        let mut old_sessions = Vec::new();
        for id in ids {
            let owned_now = self.subscriptions.values().filter(|s| s.session_id() == &ctx.session_id).count();
            let failed = |status_code| TransferResult { status_code, available_sequence_numbers: None };
            let Some(subscription) = self.subscriptions.get_mut(id) else {
                results.push(failed(StatusCode::BadSubscriptionIdInvalid));
                continue;
            };
            if !may_take_over(&subscription.owner.principal, &ctx.principal) {
                tracing::info!(subscription = id, user = %ctx.principal.name, "subscription transfer refused");
                results.push(failed(StatusCode::BadUserAccessDenied));
                continue;
            }
            if subscription.session_id() != &ctx.session_id {
                if owned_now >= self.limits.max_subscriptions_per_session {
                    results.push(failed(StatusCode::BadTooManySubscriptions));
                    continue;
                }
                let old = subscription.owner.session_id.clone();
                let message = subscription.build_status_change(ctx.now.utc, StatusCode::GoodSubscriptionTransferred);
                subscription.owner = Owner { session_id: ctx.session_id.clone(), principal: ctx.principal.clone() };
                subscription.publish_received();
                if let Some(state) = self.sessions.get_mut(&old) {
                    state.push_status((*id, message), self.limits.max_subscriptions_per_session);
                    old_sessions.push(old.clone());
                }
                tracing::debug!(subscription = id, from = %old, to = %ctx.session_id, "subscription transferred");
            }
            if request.send_initial_values {
                subscription.requeue_last_values();
            }
            results.push(TransferResult {
                status_code: StatusCode::Good,
                available_sequence_numbers: Some(subscription.available_sequence_numbers()),
            });
        }
        self.sessions.entry(ctx.session_id.clone()).or_default();
        for old in old_sessions {
            self.serve_session(&old, ctx.now);
        }
        Ok(TransferSubscriptionsResponse {
            response_header: header(ctx, &request.request_header),
            results: Some(results),
            diagnostic_infos: None,
        })
    }

    /// The session is closed (CloseSession, or its timeout). Its queued Publish requests are answered
    /// BadSessionClosed. With `delete_subscriptions` its subscriptions go too; without, they live on until their
    /// lifetime ends, for another session to transfer them.
    pub fn close_session(&mut self, session_id: &NodeId, delete_subscriptions: bool) {
        if let Some(mut state) = self.sessions.remove(session_id) {
            for pending in state.publish.drain() {
                self.responses.push_back((pending.token, Err(StatusCode::BadSessionClosed)));
            }
        }
        if delete_subscriptions {
            for id in self.subscriptions_of(session_id) {
                self.remove_subscription(id);
            }
        }
        tracing::debug!(session = %session_id, delete_subscriptions, "session closed");
    }

    /// The channel carrying the session's Publish requests went away: they are forgotten unanswered (no response
    /// could reach the client). Returns their tokens. The subscriptions stay, and their lifetime counts down.
    pub fn drop_publish_requests(&mut self, session_id: &NodeId) -> Vec<u64> {
        self.sessions
            .get_mut(session_id)
            .map(|state| state.publish.drain().map(|p| p.token).collect())
            .unwrap_or_default()
    }

    /// The next Publish answer decided, if any.
    pub fn poll_response(&mut self) -> Option<PublishOutcome> {
        self.responses.pop_front()
    }

    /// When [`SubscriptionEngine::handle_timeout`] must be called next: the earliest publishing cycle, sampling
    /// deadline or Publish timeout. `None` when nothing is pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let subscriptions = self.subscriptions.values().flat_map(|s| [Some(s.next_publish()), s.next_sample()]);
        let publish = self.sessions.values().map(|s| s.publish.next_deadline());
        subscriptions.chain(publish).flatten().min()
    }

    /// Does what is due at `now`: answers timed-out Publish requests, samples due items, and runs every publishing
    /// cycle that has ended, in the order they ended.
    pub fn handle_timeout(&mut self, now: Now, sampler: &dyn Sampler) {
        for state in self.sessions.values_mut() {
            for pending in state.publish.expire(now.instant) {
                self.responses.push_back((pending.token, Err(StatusCode::BadTimeout)));
            }
        }
        for subscription in self.subscriptions.values_mut() {
            subscription.sample_due(now, sampler);
        }
        for _ in 0..MAX_CYCLES_PER_TIMEOUT {
            // The earliest expired timer first; at equal times the higher priority.
            let due = self
                .subscriptions
                .values()
                .filter(|s| s.next_publish() <= now.instant)
                .min_by_key(|s| (s.next_publish(), std::cmp::Reverse(s.priority()), s.id()))
                .map(Subscription::id);
            let Some(id) = due else { return };
            self.publishing_cycle(id, now);
        }
        tracing::warn!("publishing cycles skipped: the driver woke too late");
        for subscription in self.subscriptions.values_mut() {
            if subscription.next_publish() <= now.instant {
                subscription.skip_to(now.instant);
            }
        }
    }

    fn publishing_cycle(&mut self, id: u32, now: Now) {
        let Some(subscription) = self.subscriptions.get_mut(&id) else { return };
        let session_id = subscription.session_id().clone();
        let request_available = self.sessions.get(&session_id).is_some_and(|s| !s.publish.is_empty());
        match subscription.on_publishing_timer(request_available) {
            Tick::Idle => {}
            Tick::Notifications | Tick::KeepAlive => {
                if let Some(pending) = self.sessions.get_mut(&session_id).and_then(|s| s.publish.pop()) {
                    self.send(id, pending, now);
                }
                // Notifications left behind by maxNotificationsPerPublish go out with further queued requests.
                self.serve_session(&session_id, now);
            }
            Tick::Expired => {
                if let Some(mut expired) = self.remove_subscription(id) {
                    tracing::info!(subscription = id, session = %session_id, "subscription expired");
                    let message = expired.build_status_change(now.utc, StatusCode::BadTimeout);
                    if let Some(state) = self.sessions.get_mut(&session_id) {
                        state.push_status((id, message), self.limits.max_subscriptions_per_session);
                    }
                    self.serve_session(&session_id, now);
                }
            }
        }
    }

    /// Answers `pending` with what subscription `id` has: notifications, or a keep-alive.
    fn send(&mut self, id: u32, pending: PendingPublish, now: Now) {
        let Some(subscription) = self.subscriptions.get_mut(&id) else {
            self.responses.push_back((pending.token, Err(StatusCode::BadNoSubscription)));
            return;
        };
        let built = match subscription.answer() {
            Tick::Notifications => subscription.build_notification(now.utc),
            _ => None,
        };
        let (message, more) = built.unwrap_or_else(|| (subscription.build_keep_alive(now.utc), false));
        let available = subscription.available_sequence_numbers();
        let token = pending.token;
        self.responses.push_back((token, Ok(pending.respond(now.utc, id, message, available, more))));
    }

    /// Answers the session's queued Publish requests for as long as something waits: status changes first, then
    /// Late subscriptions by priority and how long they waited. A session left without subscriptions gets
    /// BadNoSubscription for the rest.
    fn serve_session(&mut self, session_id: &NodeId, now: Now) {
        loop {
            let Some(state) = self.sessions.get_mut(session_id) else { return };
            if state.publish.is_empty() {
                return;
            }
            if let Some((id, message)) = state.status_messages.pop_front() {
                if let Some(pending) = state.publish.pop() {
                    let token = pending.token;
                    self.responses.push_back((token, Ok(pending.respond(now.utc, id, message, vec![], false))));
                }
                continue;
            }
            let waiting = self
                .subscriptions
                .values()
                .filter(|s| s.session_id() == session_id && s.wants_request())
                .min_by_key(|s| (std::cmp::Reverse(s.priority()), s.late_since(), s.id()))
                .map(Subscription::id);
            if let Some(id) = waiting {
                if let Some(pending) = self.sessions.get_mut(session_id).and_then(|s| s.publish.pop()) {
                    self.send(id, pending, now);
                }
                continue;
            }
            if !self.owns_any(session_id) {
                if let Some(state) = self.sessions.get_mut(session_id) {
                    for pending in state.publish.drain() {
                        self.responses.push_back((pending.token, Err(StatusCode::BadNoSubscription)));
                    }
                }
            }
            return;
        }
    }
}

/// Part 4 §5.13.7: a subscription moves only to a session acting for the same user; administrators may take any.
fn may_take_over(owner: &Arc<Principal>, caller: &Arc<Principal>) -> bool {
    caller.role == UserRole::Administrator || owner.name == caller.name
}
