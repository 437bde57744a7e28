//! The engine driven by hand: an in-memory sampler and a clock that only moves when a test says so.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opcua_types::{
    AttributeId, CreateMonitoredItemsRequest, CreateSubscriptionRequest, DataChangeFilter, DataChangeNotification,
    DataChangeTrigger, DataValue, DateTime, DeadbandType, DeleteMonitoredItemsRequest, DeleteSubscriptionsRequest,
    ExtensionObject, ModifySubscriptionRequest, MonitoredItemCreateRequest, MonitoringMode, MonitoringParameters,
    NodeId, PublishRequest, PublishResponse, ReadValueId, RepublishRequest, RequestHeader, SetMonitoringModeRequest,
    SetPublishingModeRequest, StatusChangeNotification, StatusCode, SubscriptionAcknowledgement, TimestampsToReturn,
    TransferSubscriptionsRequest, Variant,
};

use super::*;
use crate::server::access::{Principal, UserRole};

/// Values by node; a node missing from the map does not exist.
#[derive(Default)]
struct MapSampler {
    values: HashMap<NodeId, Variant>,
    ranges: HashMap<NodeId, (f64, f64)>,
}

impl Sampler for MapSampler {
    fn check(&self, _ctx: &RequestContext, item: &ReadValueId) -> StatusCode {
        if !self.values.contains_key(&item.node_id) {
            StatusCode::BadNodeIdUnknown
        } else if AttributeId::from_u32(item.attribute_id).is_err() {
            StatusCode::BadAttributeIdInvalid
        } else {
            StatusCode::Good
        }
    }

    fn sample(&self, _ctx: &RequestContext, item: &ReadValueId, _timestamps: TimestampsToReturn) -> DataValue {
        match self.values.get(&item.node_id) {
            Some(v) => DataValue { value: Some(v.clone()), status: Some(StatusCode::Good), ..Default::default() },
            None => DataValue { status: Some(StatusCode::BadNodeIdUnknown), ..Default::default() },
        }
    }

    fn eu_range(&self, node: &NodeId) -> Option<(f64, f64)> {
        self.ranges.get(node).copied()
    }
}

fn node(name: &str) -> NodeId {
    NodeId::new(2, name)
}

struct Harness {
    engine: SubscriptionEngine,
    sampler: MapSampler,
    now: Instant,
    utc: DateTime,
}

impl Harness {
    fn new() -> Self {
        Harness::with_limits(SubscriptionLimits::default())
    }

    fn with_limits(limits: SubscriptionLimits) -> Self {
        Harness {
            engine: SubscriptionEngine::new(limits),
            sampler: MapSampler::default(),
            now: Instant::now(),
            utc: DateTime::now(),
        }
    }

    fn now(&self) -> Now {
        Now::new(self.now, self.utc)
    }

    fn ctx_as(&self, session: u32, user: &str, role: UserRole) -> RequestContext {
        RequestContext {
            principal: Arc::new(Principal { name: user.into(), role }),
            session_id: NodeId::new(1, session),
            now: self.now(),
            security_mode: crate::channel::policy::SecurityMode::SignAndEncrypt,
        }
    }

    /// Session `session` of user "alice" (an Operator).
    fn ctx(&self, session: u32) -> RequestContext {
        self.ctx_as(session, "alice", UserRole::Operator)
    }

    fn set(&mut self, name: &str, value: impl Into<Variant>) {
        self.sampler.values.insert(node(name), value.into());
    }

    /// Moves the clock by `ms`, waking the engine whenever it asked to be, like a driver would.
    fn advance(&mut self, ms: u64) {
        let target = self.now + Duration::from_millis(ms);
        for _ in 0..100_000 {
            match self.engine.poll_timeout() {
                Some(t) if t <= target => {
                    self.now = self.now.max(t);
                    self.engine.handle_timeout(self.now(), &self.sampler);
                }
                _ => break,
            }
        }
        self.now = target;
    }

    fn create_subscription(&mut self, session: u32, interval: f64, lifetime: u32, keep_alive: u32) -> u32 {
        let request = CreateSubscriptionRequest {
            request_header: RequestHeader::dummy(),
            requested_publishing_interval: interval,
            requested_lifetime_count: lifetime,
            requested_max_keep_alive_count: keep_alive,
            max_notifications_per_publish: 0,
            publishing_enabled: true,
            priority: 0,
        };
        self.engine.create_subscription(&self.ctx(session), &request).unwrap().subscription_id
    }

    fn create_items(
        &mut self,
        session: u32,
        subscription_id: u32,
        items: Vec<MonitoredItemCreateRequest>,
    ) -> Result<Vec<(StatusCode, u32)>, StatusCode> {
        let request = CreateMonitoredItemsRequest {
            request_header: RequestHeader::dummy(),
            subscription_id,
            timestamps_to_return: TimestampsToReturn::Both,
            items_to_create: Some(items),
        };
        let response = self.engine.create_monitored_items(&self.ctx(session), &request, &self.sampler)?;
        Ok(response.results.unwrap_or_default().into_iter().map(|r| (r.status_code, r.monitored_item_id)).collect())
    }

    fn create_item(&mut self, session: u32, subscription_id: u32, item: MonitoredItemCreateRequest) -> u32 {
        let results = self.create_items(session, subscription_id, vec![item]).unwrap();
        assert_eq!(results[0].0, StatusCode::Good);
        results[0].1
    }

    fn publish(&mut self, session: u32, token: u64, acks: Vec<(u32, u32)>) {
        let request = PublishRequest {
            request_header: RequestHeader::dummy(),
            subscription_acknowledgements: Some(
                acks.into_iter()
                    .map(|(subscription_id, sequence_number)| SubscriptionAcknowledgement {
                        subscription_id,
                        sequence_number,
                    })
                    .collect(),
            ),
        };
        self.engine.publish(&self.ctx(session), token, &request);
    }

    fn responses(&mut self) -> Vec<(u64, Result<PublishResponse, StatusCode>)> {
        std::iter::from_fn(|| self.engine.poll_response()).collect()
    }

    fn one_response(&mut self, token: u64) -> PublishResponse {
        let mut responses = self.responses();
        assert_eq!(responses.len(), 1, "{responses:?}");
        let (t, response) = responses.remove(0);
        assert_eq!(t, token);
        response.unwrap()
    }
}

fn item(name: &str, handle: u32, sampling: f64, queue: u32) -> MonitoredItemCreateRequest {
    MonitoredItemCreateRequest {
        item_to_monitor: ReadValueId {
            node_id: node(name),
            attribute_id: AttributeId::Value as u32,
            ..Default::default()
        },
        monitoring_mode: MonitoringMode::Reporting,
        requested_parameters: MonitoringParameters {
            client_handle: handle,
            sampling_interval: sampling,
            filter: ExtensionObject::null(),
            queue_size: queue,
            discard_oldest: true,
        },
    }
}

fn with_filter(mut item: MonitoredItemCreateRequest, kind: DeadbandType, value: f64) -> MonitoredItemCreateRequest {
    item.requested_parameters.filter = ExtensionObject::from_message(DataChangeFilter {
        trigger: DataChangeTrigger::StatusValue,
        deadband_type: kind as u32,
        deadband_value: value,
    });
    item
}

/// The (client handle, value, overflow) triples of a response's data change notifications.
fn data(response: &PublishResponse) -> Vec<(u32, Variant, bool)> {
    let mut out = Vec::new();
    for object in response.notification_message.notification_data.iter().flatten() {
        if let Some(change) = object.inner_as::<DataChangeNotification>() {
            for n in change.monitored_items.iter().flatten() {
                let overflow = n.value.status.unwrap_or(StatusCode::Good).overflow();
                out.push((n.client_handle, n.value.value.clone().unwrap_or_default(), overflow));
            }
        }
    }
    out
}

fn values(response: &PublishResponse) -> Vec<Variant> {
    data(response).into_iter().map(|(_, v, _)| v).collect()
}

fn status_change(response: &PublishResponse) -> Option<StatusCode> {
    response
        .notification_message
        .notification_data
        .iter()
        .flatten()
        .find_map(|o| o.inner_as::<StatusChangeNotification>())
        .map(|s| s.status)
}

fn is_keep_alive(response: &PublishResponse) -> bool {
    response.notification_message.notification_data.as_ref().is_none_or(|d| d.is_empty())
}

#[test]
fn data_changes_reach_publish_in_order_with_increasing_sequence_numbers() {
    let mut h = Harness::new();
    h.set("a", 1);
    let sub = h.create_subscription(1, 100.0, 30, 10);
    h.create_item(1, sub, item("a", 11, 50.0, 10));
    h.publish(1, 1, vec![]);
    assert!(h.responses().is_empty(), "nothing is sent before the publishing interval ends");
    h.advance(100);
    let first = h.one_response(1);
    assert_eq!(first.subscription_id, sub);
    assert_eq!(data(&first), vec![(11, Variant::Int32(1), false)], "the initial value");
    assert_eq!(first.notification_message.sequence_number, 1);

    h.publish(1, 2, vec![]);
    h.set("a", 2);
    h.advance(50);
    h.set("a", 3);
    h.advance(50);
    let second = h.one_response(2);
    assert_eq!(values(&second), vec![Variant::Int32(2), Variant::Int32(3)]);
    assert_eq!(second.notification_message.sequence_number, 2);
    assert_eq!(second.available_sequence_numbers, Some(vec![1, 2]));
    assert!(!second.more_notifications);
}

#[test]
fn keep_alive_after_the_keep_alive_count() {
    let mut h = Harness::new();
    let sub = h.create_subscription(1, 100.0, 30, 3);
    h.publish(1, 1, vec![]);
    h.advance(100);
    let first = h.one_response(1);
    assert!(is_keep_alive(&first), "the first cycle tells the client the subscription lives");
    assert_eq!(first.subscription_id, sub);
    assert_eq!(first.notification_message.sequence_number, 1, "the next sequence number, not consumed");

    h.publish(1, 2, vec![]);
    h.advance(200);
    assert!(h.responses().is_empty(), "no keep-alive before 3 empty intervals");
    h.advance(100);
    let second = h.one_response(2);
    assert!(is_keep_alive(&second));
    assert_eq!(second.notification_message.sequence_number, 1);
    assert_eq!(second.available_sequence_numbers, Some(vec![]));
}

#[test]
fn a_late_subscription_answers_the_next_publish_at_once() {
    let mut h = Harness::new();
    h.set("a", 5);
    let sub = h.create_subscription(1, 100.0, 30, 10);
    h.create_item(1, sub, item("a", 1, 100.0, 1));
    h.advance(150);
    assert_eq!(h.engine.subscription(sub).map(Subscription::state), Some(SubscriptionState::Late));
    h.publish(1, 9, vec![]);
    let response = h.one_response(9);
    assert_eq!(values(&response), vec![Variant::Int32(5)]);
    assert_eq!(h.engine.subscription(sub).map(Subscription::state), Some(SubscriptionState::Normal));
}

#[test]
fn the_subscription_expires_after_its_lifetime_and_says_so() {
    let mut h = Harness::new();
    let sub = h.create_subscription(1, 100.0, 3, 1);
    assert_eq!(h.engine.subscription(sub).map(|s| s.revised().lifetime_count), Some(3));
    h.advance(250);
    assert!(h.engine.subscription(sub).is_some(), "alive for lifetime count intervals");
    h.advance(100);
    assert!(h.engine.subscription(sub).is_none(), "expired after 3 intervals without a Publish request");
    h.publish(1, 1, vec![]);
    let response = h.one_response(1);
    assert_eq!(response.subscription_id, sub);
    assert_eq!(status_change(&response), Some(StatusCode::BadTimeout));
    h.publish(1, 2, vec![]);
    assert_eq!(h.responses(), vec![(2, Err(StatusCode::BadNoSubscription))]);
}

#[test]
fn publish_requests_keep_a_subscription_alive() {
    let mut h = Harness::new();
    let sub = h.create_subscription(1, 100.0, 3, 1);
    for token in 0..10 {
        h.publish(1, token, vec![]);
        h.advance(100);
    }
    assert!(h.engine.subscription(sub).is_some());
    assert_eq!(h.responses().len(), 10, "a keep-alive every interval");
}

#[test]
fn acknowledgements_and_republish() {
    let mut h = Harness::new();
    h.set("a", 1);
    let sub = h.create_subscription(1, 100.0, 30, 10);
    h.create_item(1, sub, item("a", 1, 100.0, 10));
    h.publish(1, 1, vec![]);
    h.advance(100);
    assert_eq!(h.one_response(1).notification_message.sequence_number, 1);
    h.set("a", 2);
    h.publish(1, 2, vec![]);
    h.advance(100);
    assert_eq!(h.one_response(2).notification_message.sequence_number, 2);

    let republish = |h: &mut Harness, seq| {
        let request = RepublishRequest {
            request_header: RequestHeader::dummy(),
            subscription_id: sub,
            retransmit_sequence_number: seq,
        };
        h.engine.republish(&h.ctx(1), &request).map(|r| values(&r.notification_message_response()))
    };
    assert_eq!(republish(&mut h, 1), Ok(vec![Variant::Int32(1)]));

    h.set("a", 3);
    h.publish(1, 3, vec![(sub, 1), (sub, 1), (sub + 1, 2), (sub, 77)]);
    h.advance(100);
    let response = h.one_response(3);
    assert_eq!(
        response.results,
        Some(vec![
            StatusCode::Good,
            StatusCode::BadSequenceNumberUnknown,
            StatusCode::BadSubscriptionIdInvalid,
            StatusCode::BadSequenceNumberUnknown
        ])
    );
    assert_eq!(response.available_sequence_numbers, Some(vec![2, 3]));
    assert_eq!(republish(&mut h, 1), Err(StatusCode::BadMessageNotAvailable));
    assert_eq!(republish(&mut h, 2), Ok(vec![Variant::Int32(2)]));
    // Another session may not republish it.
    let request = RepublishRequest {
        request_header: RequestHeader::dummy(),
        subscription_id: sub,
        retransmit_sequence_number: 2,
    };
    assert_eq!(h.engine.republish(&h.ctx(2), &request).err(), Some(StatusCode::BadSubscriptionIdInvalid));
}

trait AsResponse {
    fn notification_message_response(&self) -> PublishResponse;
}

impl AsResponse for opcua_types::RepublishResponse {
    fn notification_message_response(&self) -> PublishResponse {
        PublishResponse { notification_message: self.notification_message.clone(), ..Default::default() }
    }
}

#[test]
fn the_retransmission_queue_is_bounded() {
    let mut h = Harness::with_limits(SubscriptionLimits { retransmission_queue_len: 2, ..Default::default() });
    let sub = h.create_subscription(1, 100.0, 30, 10);
    h.set("a", 0);
    h.create_item(1, sub, item("a", 1, 100.0, 1));
    for i in 1..=4 {
        h.publish(1, i, vec![]);
        h.advance(100);
        h.set("a", i as i32);
    }
    let last = h.responses().pop().unwrap().1.unwrap();
    assert_eq!(last.available_sequence_numbers, Some(vec![3, 4]));
}

#[test]
fn absolute_deadband_suppresses_small_changes() {
    let mut h = Harness::new();
    h.set("a", 10.0);
    let sub = h.create_subscription(1, 100.0, 30, 10);
    h.create_item(1, sub, with_filter(item("a", 1, 50.0, 10), DeadbandType::Absolute, 1.0));
    for v in [10.5, 10.9, 11.5, 11.0] {
        h.advance(50);
        h.set("a", v);
    }
    h.advance(50);
    h.publish(1, 1, vec![]);
    assert_eq!(values(&h.one_response(1)), vec![Variant::Double(10.0), Variant::Double(11.5)]);
}

#[test]
fn percent_deadband_uses_the_eu_range() {
    let mut h = Harness::new();
    h.set("p", 50.0);
    h.sampler.ranges.insert(node("p"), (0.0, 200.0));
    h.set("q", 50.0);
    let sub = h.create_subscription(1, 100.0, 30, 10);
    // 5 % of 200 is 10.
    h.create_item(1, sub, with_filter(item("p", 1, 50.0, 10), DeadbandType::Percent, 5.0));
    for v in [55.0, 59.0, 61.0] {
        h.advance(50);
        h.set("p", v);
    }
    h.advance(50);
    h.publish(1, 1, vec![]);
    assert_eq!(values(&h.one_response(1)), vec![Variant::Double(50.0), Variant::Double(61.0)]);
    // A node without EURange cannot have a percent deadband.
    let results = h.create_items(1, sub, vec![with_filter(item("q", 2, 50.0, 10), DeadbandType::Percent, 5.0)]);
    assert_eq!(results.unwrap()[0].0, StatusCode::BadMonitoredItemFilterUnsupported);
}

fn overflow_run(discard_oldest: bool) -> Vec<(u32, Variant, bool)> {
    let mut h = Harness::new();
    h.set("a", 0);
    let sub = h.create_subscription(1, 1000.0, 30, 10);
    let mut request = item("a", 1, 100.0, 3);
    request.requested_parameters.discard_oldest = discard_oldest;
    h.create_item(1, sub, request);
    for v in 1..=4 {
        h.advance(100);
        h.set("a", v);
    }
    h.publish(1, 1, vec![]);
    h.advance(1000);
    data(&h.one_response(1))
}

#[test]
fn queue_overflow_discarding_oldest_marks_the_oldest_kept_value() {
    let i = Variant::Int32;
    assert_eq!(overflow_run(true), vec![(1, i(2), true), (1, i(3), false), (1, i(4), false)]);
}

#[test]
fn queue_overflow_discarding_newest_marks_the_replacing_value() {
    let i = Variant::Int32;
    assert_eq!(overflow_run(false), vec![(1, i(0), false), (1, i(1), false), (1, i(4), true)]);
}

#[test]
fn disabled_items_stop_reporting_and_report_again_when_enabled() {
    let mut h = Harness::new();
    h.set("a", 1);
    let sub = h.create_subscription(1, 100.0, 30, 1);
    let id = h.create_item(1, sub, item("a", 1, 50.0, 10));
    h.publish(1, 1, vec![]);
    h.advance(100);
    assert_eq!(values(&h.one_response(1)), vec![Variant::Int32(1)]);

    let mode = |h: &mut Harness, monitoring_mode| {
        let request = SetMonitoringModeRequest {
            request_header: RequestHeader::dummy(),
            subscription_id: sub,
            monitoring_mode,
            monitored_item_ids: Some(vec![id, 999]),
        };
        let response = h.engine.set_monitoring_mode(&h.ctx(1), &request, &h.sampler).unwrap();
        assert_eq!(response.results, Some(vec![StatusCode::Good, StatusCode::BadMonitoredItemIdInvalid]));
    };
    mode(&mut h, MonitoringMode::Disabled);
    h.set("a", 2);
    h.publish(1, 2, vec![]);
    h.advance(100);
    assert!(is_keep_alive(&h.one_response(2)), "a disabled item reports nothing");

    mode(&mut h, MonitoringMode::Reporting);
    h.publish(1, 3, vec![]);
    h.advance(100);
    assert_eq!(values(&h.one_response(3)), vec![Variant::Int32(2)], "the current value once enabled");
}

#[test]
fn sampling_mode_queues_without_reporting() {
    let mut h = Harness::new();
    h.set("a", 1);
    let sub = h.create_subscription(1, 100.0, 30, 1);
    let mut request = item("a", 1, 50.0, 10);
    request.monitoring_mode = MonitoringMode::Sampling;
    let id = h.create_item(1, sub, request);
    h.set("a", 2);
    h.publish(1, 1, vec![]);
    h.advance(100);
    assert!(is_keep_alive(&h.one_response(1)));
    let request = SetMonitoringModeRequest {
        request_header: RequestHeader::dummy(),
        subscription_id: sub,
        monitoring_mode: MonitoringMode::Reporting,
        monitored_item_ids: Some(vec![id]),
    };
    h.engine.set_monitoring_mode(&h.ctx(1), &request, &h.sampler).unwrap();
    h.publish(1, 2, vec![]);
    h.advance(100);
    assert_eq!(values(&h.one_response(2)), vec![Variant::Int32(1), Variant::Int32(2)]);
}

#[test]
fn publishing_disabled_sends_keep_alives_only() {
    let mut h = Harness::new();
    h.set("a", 1);
    let sub = h.create_subscription(1, 100.0, 30, 1);
    h.create_item(1, sub, item("a", 1, 50.0, 10));
    let request = SetPublishingModeRequest {
        request_header: RequestHeader::dummy(),
        publishing_enabled: false,
        subscription_ids: Some(vec![sub, 4242]),
    };
    let response = h.engine.set_publishing_mode(&h.ctx(1), &request).unwrap();
    assert_eq!(response.results, Some(vec![StatusCode::Good, StatusCode::BadSubscriptionIdInvalid]));
    h.publish(1, 1, vec![]);
    h.advance(100);
    assert!(is_keep_alive(&h.one_response(1)));
}

#[test]
fn max_notifications_per_publish_splits_and_sets_more_notifications() {
    let mut h = Harness::new();
    let request = CreateSubscriptionRequest {
        request_header: RequestHeader::dummy(),
        requested_publishing_interval: 100.0,
        requested_lifetime_count: 30,
        requested_max_keep_alive_count: 10,
        max_notifications_per_publish: 2,
        publishing_enabled: true,
        priority: 0,
    };
    let sub = h.engine.create_subscription(&h.ctx(1), &request).unwrap().subscription_id;
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        h.set(name, i as i32);
        h.create_item(1, sub, item(name, i as u32, 100.0, 1));
    }
    h.publish(1, 1, vec![]);
    h.advance(100);
    let first = h.one_response(1);
    assert_eq!(data(&first).len(), 2);
    assert!(first.more_notifications);
    h.publish(1, 2, vec![]);
    let second = h.one_response(2);
    assert_eq!(data(&second).len(), 1, "the rest goes out with the next request at once");
    assert!(!second.more_notifications);
    assert_eq!(second.notification_message.sequence_number, 2);
}

#[test]
fn too_many_publish_requests_answers_the_oldest() {
    let mut h = Harness::with_limits(SubscriptionLimits { max_publish_requests_per_session: 2, ..Default::default() });
    h.create_subscription(1, 100.0, 30, 10);
    h.publish(1, 1, vec![]);
    h.publish(1, 2, vec![]);
    assert!(h.responses().is_empty());
    h.publish(1, 3, vec![]);
    assert_eq!(h.responses(), vec![(1, Err(StatusCode::BadTooManyPublishRequests))]);
    assert_eq!(h.engine.queued_publish_requests(&NodeId::new(1, 1u32)), 2);
}

#[test]
fn too_many_subscriptions() {
    let mut h = Harness::with_limits(SubscriptionLimits {
        max_subscriptions_per_session: 2,
        max_subscriptions: 3,
        ..Default::default()
    });
    let request = CreateSubscriptionRequest { requested_publishing_interval: 100.0, ..Default::default() };
    assert!(h.engine.create_subscription(&h.ctx(1), &request).is_ok());
    assert!(h.engine.create_subscription(&h.ctx(1), &request).is_ok());
    assert_eq!(h.engine.create_subscription(&h.ctx(1), &request).err(), Some(StatusCode::BadTooManySubscriptions));
    assert!(h.engine.create_subscription(&h.ctx(2), &request).is_ok());
    assert_eq!(
        h.engine.create_subscription(&h.ctx(3), &request).err(),
        Some(StatusCode::BadTooManySubscriptions),
        "the server-wide limit"
    );
}

#[test]
fn too_many_monitored_items() {
    let mut h = Harness::with_limits(SubscriptionLimits {
        max_monitored_items_per_subscription: 2,
        max_monitored_items: 3,
        ..Default::default()
    });
    h.set("a", 1);
    let s1 = h.create_subscription(1, 100.0, 30, 10);
    let s2 = h.create_subscription(1, 100.0, 30, 10);
    let results = h.create_items(1, s1, vec![item("a", 1, 100.0, 1), item("a", 2, 100.0, 1), item("a", 3, 100.0, 1)]);
    let codes: Vec<StatusCode> = results.unwrap().into_iter().map(|r| r.0).collect();
    assert_eq!(codes, vec![StatusCode::Good, StatusCode::Good, StatusCode::BadTooManyMonitoredItems]);
    let codes: Vec<StatusCode> = h
        .create_items(1, s2, vec![item("a", 4, 100.0, 1), item("a", 5, 100.0, 1)])
        .unwrap()
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(codes, vec![StatusCode::Good, StatusCode::BadTooManyMonitoredItems], "the server-wide limit");
    assert_eq!(h.engine.monitored_item_count(), 3);
    // Deleting frees room.
    let delete =
        DeleteSubscriptionsRequest { request_header: RequestHeader::dummy(), subscription_ids: Some(vec![s1]) };
    h.engine.delete_subscriptions(&h.ctx(1), &delete).unwrap();
    assert_eq!(h.engine.monitored_item_count(), 1);
}

#[test]
fn publish_without_subscription() {
    let mut h = Harness::new();
    h.publish(1, 5, vec![]);
    assert_eq!(h.responses(), vec![(5, Err(StatusCode::BadNoSubscription))]);
    // Deleting the last subscription answers queued requests the same way.
    let sub = h.create_subscription(1, 100.0, 30, 10);
    h.publish(1, 6, vec![]);
    let delete =
        DeleteSubscriptionsRequest { request_header: RequestHeader::dummy(), subscription_ids: Some(vec![sub, sub]) };
    let response = h.engine.delete_subscriptions(&h.ctx(1), &delete).unwrap();
    assert_eq!(response.results, Some(vec![StatusCode::Good, StatusCode::BadSubscriptionIdInvalid]));
    assert_eq!(h.responses(), vec![(6, Err(StatusCode::BadNoSubscription))]);
}

#[test]
fn a_publish_request_times_out_after_its_hint() {
    let mut h = Harness::new();
    h.create_subscription(1, 100.0, 3000, 1000);
    h.publish(1, 1, vec![]);
    h.advance(100);
    assert_eq!(h.responses().len(), 1, "the first keep-alive");
    let request = PublishRequest {
        request_header: RequestHeader { timeout_hint: 250, ..RequestHeader::dummy() },
        subscription_acknowledgements: None,
    };
    h.engine.publish(&h.ctx(1), 2, &request);
    h.advance(200);
    assert!(h.responses().is_empty());
    h.advance(100);
    assert_eq!(h.responses(), vec![(2, Err(StatusCode::BadTimeout))]);
}

fn transfer(h: &mut Harness, ctx: &RequestContext, ids: Vec<u32>, send_initial_values: bool) -> Vec<StatusCode> {
    let request = TransferSubscriptionsRequest {
        request_header: RequestHeader::dummy(),
        subscription_ids: Some(ids),
        send_initial_values,
    };
    let response = h.engine.transfer_subscriptions(ctx, &request).unwrap();
    response.results.unwrap_or_default().into_iter().map(|r| r.status_code).collect()
}

#[test]
fn transfer_between_sessions_checks_the_user() {
    let mut h = Harness::new();
    h.set("a", 7);
    let sub = h.create_subscription(1, 100.0, 30, 10);
    h.create_item(1, sub, item("a", 1, 100.0, 1));
    h.publish(1, 1, vec![]);
    h.advance(100);
    assert_eq!(values(&h.one_response(1)), vec![Variant::Int32(7)]);
    h.publish(1, 2, vec![]);

    let bob = h.ctx_as(2, "bob", UserRole::Operator);
    assert_eq!(
        transfer(&mut h, &bob, vec![sub, 999], false),
        vec![StatusCode::BadUserAccessDenied, StatusCode::BadSubscriptionIdInvalid]
    );
    assert_eq!(h.engine.subscription(sub).map(|s| s.session_id().clone()), Some(NodeId::new(1, 1u32)));

    // The same user on another session takes it over, with its last value again.
    let alice = h.ctx(3);
    assert_eq!(transfer(&mut h, &alice, vec![sub], true), vec![StatusCode::Good]);
    let old = h.one_response(2);
    assert_eq!(status_change(&old), Some(StatusCode::GoodSubscriptionTransferred));
    assert_eq!(old.subscription_id, sub);
    h.publish(3, 3, vec![]);
    h.advance(100);
    let new = h.one_response(3);
    assert_eq!(values(&new), vec![Variant::Int32(7)], "sendInitialValues");
    assert!(new.notification_message.sequence_number > old.notification_message.sequence_number);
    // The old session has no subscription left.
    h.publish(1, 4, vec![]);
    assert_eq!(h.responses(), vec![(4, Err(StatusCode::BadNoSubscription))]);

    // An administrator may take anyone's subscription.
    let admin = h.ctx_as(4, "root", UserRole::Administrator);
    assert_eq!(transfer(&mut h, &admin, vec![sub], false), vec![StatusCode::Good]);
    assert_eq!(h.engine.subscriptions_of(&NodeId::new(1, 4u32)), vec![sub]);
}

#[test]
fn close_session_keeps_or_deletes_subscriptions() {
    let mut h = Harness::new();
    h.set("a", 1);
    let kept = h.create_subscription(1, 100.0, 30, 10);
    h.create_item(1, kept, item("a", 1, 100.0, 1));
    h.publish(1, 1, vec![]);
    h.publish(1, 2, vec![]);
    assert!(h.responses().is_empty());
    h.engine.close_session(&NodeId::new(1, 1u32), false);
    let closed = vec![(1, Err(StatusCode::BadSessionClosed)), (2, Err(StatusCode::BadSessionClosed))];
    assert_eq!(h.responses(), closed);
    assert!(h.engine.subscription(kept).is_some(), "kept for a transfer");
    let ctx = h.ctx(2);
    assert_eq!(transfer(&mut h, &ctx, vec![kept], false), vec![StatusCode::Good]);

    let deleted = h.create_subscription(3, 100.0, 30, 10);
    h.create_item(3, deleted, item("a", 2, 100.0, 1));
    h.publish(3, 3, vec![]);
    assert_eq!(h.engine.monitored_item_count(), 2);
    h.engine.close_session(&NodeId::new(1, 3u32), true);
    assert_eq!(h.responses(), vec![(3, Err(StatusCode::BadSessionClosed))]);
    assert!(h.engine.subscription(deleted).is_none());
    assert_eq!(h.engine.monitored_item_count(), 1);
}

#[test]
fn dropped_publish_requests_are_forgotten_and_the_lifetime_runs() {
    let mut h = Harness::new();
    let sub = h.create_subscription(1, 100.0, 3, 1);
    h.advance(100);
    h.publish(1, 1, vec![]);
    h.responses();
    h.publish(1, 2, vec![]);
    assert_eq!(h.engine.drop_publish_requests(&NodeId::new(1, 1u32)), vec![2]);
    h.advance(300);
    assert!(h.responses().is_empty());
    assert!(h.engine.subscription(sub).is_none());
}

#[test]
fn service_faults() {
    let mut h = Harness::new();
    h.set("a", 1);
    let sub = h.create_subscription(1, 100.0, 30, 10);
    let ctx = h.ctx(1);
    let empty =
        CreateMonitoredItemsRequest { subscription_id: sub, items_to_create: Some(vec![]), ..Default::default() };
    assert_eq!(h.engine.create_monitored_items(&ctx, &empty, &h.sampler).err(), Some(StatusCode::BadNothingToDo));
    let invalid = CreateMonitoredItemsRequest {
        subscription_id: sub,
        timestamps_to_return: TimestampsToReturn::Invalid,
        items_to_create: Some(vec![item("a", 1, 100.0, 1)]),
        ..Default::default()
    };
    assert_eq!(
        h.engine.create_monitored_items(&ctx, &invalid, &h.sampler).err(),
        Some(StatusCode::BadTimestampsToReturnInvalid)
    );
    let other = h.ctx(2);
    let elsewhere = CreateMonitoredItemsRequest { subscription_id: sub, ..invalid.clone() };
    assert_eq!(
        h.engine.create_monitored_items(&other, &elsewhere, &h.sampler).err(),
        Some(StatusCode::BadSubscriptionIdInvalid),
        "a subscription of another session"
    );
    let many = DeleteMonitoredItemsRequest {
        subscription_id: sub,
        monitored_item_ids: Some(vec![1; 1001]),
        ..Default::default()
    };
    assert_eq!(h.engine.delete_monitored_items(&ctx, &many).err(), Some(StatusCode::BadTooManyOperations));
    let modify = ModifySubscriptionRequest { subscription_id: sub + 1, ..Default::default() };
    assert_eq!(h.engine.modify_subscription(&ctx, &modify).err(), Some(StatusCode::BadSubscriptionIdInvalid));
    let transfer_none = TransferSubscriptionsRequest::default();
    assert_eq!(h.engine.transfer_subscriptions(&ctx, &transfer_none).err(), Some(StatusCode::BadNothingToDo));

    // Per-item failures: unknown node, filter on a non-Value attribute.
    let mut display_name = with_filter(item("a", 2, 100.0, 1), DeadbandType::None, 0.0);
    display_name.item_to_monitor.attribute_id = AttributeId::DisplayName as u32;
    let results = h.create_items(1, sub, vec![item("missing", 1, 100.0, 1), display_name]).unwrap();
    let codes: Vec<StatusCode> = results.into_iter().map(|r| r.0).collect();
    assert_eq!(codes, vec![StatusCode::BadNodeIdUnknown, StatusCode::BadFilterNotAllowed]);
    assert_eq!(h.engine.monitored_item_count(), 0);
}

#[test]
fn modify_subscription_revises_and_applies() {
    let mut h = Harness::new();
    let sub = h.create_subscription(1, 100.0, 30, 10);
    let request = ModifySubscriptionRequest {
        subscription_id: sub,
        requested_publishing_interval: 1.0,
        requested_lifetime_count: 2,
        requested_max_keep_alive_count: 5,
        ..Default::default()
    };
    let response = h.engine.modify_subscription(&h.ctx(1), &request).unwrap();
    assert_eq!(response.revised_publishing_interval, h.engine.limits().min_publishing_interval_ms);
    assert_eq!((response.revised_lifetime_count, response.revised_max_keep_alive_count), (15, 5));
    let next = h.engine.subscription(sub).map(Subscription::next_publish);
    assert_eq!(next, Some(h.now + Duration::from_millis(50)));
}

#[test]
fn the_higher_priority_late_subscription_is_served_first() {
    let mut h = Harness::new();
    let low = h.create_subscription(1, 100.0, 30, 10);
    let request = CreateSubscriptionRequest {
        requested_publishing_interval: 100.0,
        requested_lifetime_count: 30,
        requested_max_keep_alive_count: 10,
        priority: 200,
        publishing_enabled: true,
        ..Default::default()
    };
    let high = h.engine.create_subscription(&h.ctx(1), &request).unwrap().subscription_id;
    h.advance(100);
    h.publish(1, 1, vec![]);
    h.publish(1, 2, vec![]);
    let ids: Vec<u32> = h.responses().into_iter().map(|(_, r)| r.unwrap().subscription_id).collect();
    assert_eq!(ids, vec![high, low]);
}

#[test]
fn poll_timeout_names_the_next_deadline() {
    let mut h = Harness::new();
    assert_eq!(h.engine.poll_timeout(), None);
    h.set("a", 1);
    let sub = h.create_subscription(1, 1000.0, 30, 10);
    assert_eq!(h.engine.poll_timeout(), Some(h.now + Duration::from_millis(1000)));
    h.create_item(1, sub, item("a", 1, 200.0, 1));
    assert_eq!(h.engine.poll_timeout(), Some(h.now + Duration::from_millis(200)), "the next sample");
}

#[test]
fn hostile_values_are_revised_not_trusted() {
    let mut h = Harness::new();
    h.set("a", 1);
    for interval in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, f64::MAX, f64::MIN_POSITIVE] {
        let request = CreateSubscriptionRequest {
            requested_publishing_interval: interval,
            requested_lifetime_count: u32::MAX,
            requested_max_keep_alive_count: u32::MAX,
            max_notifications_per_publish: u32::MAX,
            publishing_enabled: true,
            priority: u8::MAX,
            ..Default::default()
        };
        let response = h.engine.create_subscription(&h.ctx(1), &request).unwrap();
        let limits = h.engine.limits();
        assert!(response.revised_publishing_interval >= limits.min_publishing_interval_ms);
        assert!(response.revised_publishing_interval <= limits.max_publishing_interval_ms);
        assert!(response.revised_lifetime_count >= 3 * response.revised_max_keep_alive_count);
        let mut request = item("a", 1, interval, u32::MAX);
        request.requested_parameters.discard_oldest = false;
        let results = h.create_items(1, response.subscription_id, vec![request]).unwrap();
        assert_eq!(results[0].0, StatusCode::Good);
    }
    let huge_timeout = PublishRequest {
        request_header: RequestHeader { timeout_hint: u32::MAX, ..RequestHeader::dummy() },
        subscription_acknowledgements: Some(vec![SubscriptionAcknowledgement {
            subscription_id: 0,
            sequence_number: 0,
        }]),
    };
    h.engine.publish(&h.ctx(1), u64::MAX, &huge_timeout);
    h.advance(3_600_000);
    assert!(h.responses().iter().any(|(token, r)| *token == u64::MAX && r.is_ok()));
}
