//! The Part 4 services an activated session calls: attribute (Read, Write), view (Browse, BrowseNext,
//! TranslateBrowsePathsToNodeIds, RegisterNodes, UnregisterNodes), method (Call), subscription and monitored item
//! services, Publish and Republish, over an [`AddressSpace`] and a [`SubscriptionEngine`].
//!
//! The address space and the engine are sans-IO; this module is their thin driver. One task wakes the engine at
//! its deadlines (sampling, publishing cycles, Publish timeouts) and hands finished Publish responses to the
//! requests waiting for them. Method handlers run without the address-space lock, as [`Reply::Later`]s.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use opcua_types::{
    BinaryDecodable, BinaryEncodable, BrowseNextRequest, BrowseRequest, CallRequest, CreateMonitoredItemsRequest,
    CreateSubscriptionRequest, DataValue, DeleteMonitoredItemsRequest, DeleteSubscriptionsRequest,
    ModifyMonitoredItemsRequest, ModifySubscriptionRequest, NodeId, ObjectId, PublishRequest, PublishResponse,
    ReadRequest, ReadValueId, RegisterNodesRequest, RepublishRequest, RequestHeader, SetMonitoringModeRequest,
    SetPublishingModeRequest, StatusCode, TimestampsToReturn, TransferSubscriptionsRequest,
    TranslateBrowsePathsToNodeIdsRequest, UnregisterNodesRequest, WriteRequest,
};
use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

use super::access::RequestContext;
use super::address_space::{AddressSpace, ContinuationPoints, SharedAddressSpace};
use super::services::{encode_or_fault, fault, SessionServices};
use super::subscriptions::{Sampler, SubscriptionEngine, SubscriptionLimits};
use crate::channel::secure_channel::Now;
use crate::read_codec;
use crate::service::BodyCodec;
use crate::transport::tcp::{ChannelInfo, Deadline, Reply};

/// The address space as the subscription engine's source of samples.
struct SpaceSampler<'a>(&'a AddressSpace);

impl Sampler for SpaceSampler<'_> {
    fn check(&self, ctx: &RequestContext, item: &ReadValueId) -> StatusCode {
        let sample = self.0.sample(ctx, item, TimestampsToReturn::Neither);
        match sample.status.unwrap_or(StatusCode::Good) {
            s @ (StatusCode::BadNodeIdUnknown
            | StatusCode::BadAttributeIdInvalid
            | StatusCode::BadNotReadable
            | StatusCode::BadUserAccessDenied
            | StatusCode::BadIndexRangeInvalid
            | StatusCode::BadDataEncodingInvalid
            | StatusCode::BadDataEncodingUnsupported) => s,
            _ => StatusCode::Good,
        }
    }

    fn sample(&self, ctx: &RequestContext, item: &ReadValueId, timestamps: TimestampsToReturn) -> DataValue {
        self.0.sample(ctx, item, timestamps)
    }

    fn eu_range(&self, node: &NodeId) -> Option<(f64, f64)> {
        self.0.eu_range(node)
    }
}

type PublishWaiter = oneshot::Sender<Result<PublishResponse, StatusCode>>;

struct Engine {
    engine: Mutex<SubscriptionEngine>,
    waiters: Mutex<HashMap<u64, (PublishWaiter, NodeId)>>,
    wake: Notify,
}

impl Engine {
    /// Hands every decided Publish answer to its waiting request.
    fn deliver(&self, engine: &mut SubscriptionEngine) {
        while let Some((token, outcome)) = engine.poll_response() {
            if let Some((waiter, _)) = self.waiters.lock().remove(&token) {
                // The request's connection may be gone; the answer then has nobody to go to.
                let _ = waiter.send(outcome);
            }
        }
    }
}

/// The standard services over one address space and one subscription engine.
pub struct StandardServices {
    space: SharedAddressSpace,
    engine: Arc<Engine>,
    continuation_points: Mutex<HashMap<NodeId, ContinuationPoints>>,
    next_token: AtomicU64,
    driver: JoinHandle<()>,
}

impl std::fmt::Debug for StandardServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandardServices").field("space", &self.space).finish_non_exhaustive()
    }
}

impl Drop for StandardServices {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl StandardServices {
    /// Serves `space` with subscriptions limited by `limits`. Spawns the engine's driver task: call it inside a
    /// tokio runtime.
    pub fn start(space: SharedAddressSpace, limits: SubscriptionLimits) -> Arc<Self> {
        let engine = Arc::new(Engine {
            engine: Mutex::new(SubscriptionEngine::new(limits)),
            waiters: Mutex::default(),
            wake: Notify::new(),
        });
        let driver = tokio::spawn(drive(engine.clone(), space.clone()));
        Arc::new(StandardServices {
            space,
            engine,
            continuation_points: Mutex::default(),
            next_token: AtomicU64::new(1),
            driver,
        })
    }

    /// The address space served.
    pub fn address_space(&self) -> &SharedAddressSpace {
        &self.space
    }

    /// How many subscriptions exist.
    pub fn subscription_count(&self) -> usize {
        self.engine.engine.lock().subscription_count()
    }

    fn publish(&self, request: PublishRequest, ctx: RequestContext) -> Reply {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.engine.waiters.lock().insert(token, (tx, ctx.session_id.clone()));
        {
            let mut engine = self.engine.engine.lock();
            engine.publish(&ctx, token, &request);
            self.engine.deliver(&mut engine);
        }
        // A new request may complete a late subscription's cycle or change the next deadline.
        self.engine.wake.notify_one();
        let handle = request.request_header.request_handle;
        Reply::Later(Box::pin(async move {
            let codec = BodyCodec::shared();
            match rx.await {
                Ok(Ok(response)) => {
                    encode_or_fault(codec, ObjectId::PublishResponse_Encoding_DefaultBinary, &response, handle, ctx.now)
                }
                Ok(Err(status)) => fault(codec, handle, status, Now::system()),
                Err(_) => fault(codec, handle, StatusCode::BadSessionClosed, Now::system()),
            }
        }))
    }

    fn with_engine<R>(&self, f: impl FnOnce(&mut SubscriptionEngine, &SpaceSampler<'_>) -> R) -> R {
        let space = self.space.read_guard();
        let mut engine = self.engine.engine.lock();
        let r = f(&mut engine, &SpaceSampler(&space));
        self.engine.deliver(&mut engine);
        drop(engine);
        self.engine.wake.notify_one();
        r
    }
}

/// Decodes a request of type `Req`, answers it with `serve`, and encodes the response as `response_id`.
fn serve<Req, Resp>(
    body: &[u8],
    at: usize,
    now: Now,
    response_id: ObjectId,
    header: impl Fn(&Req) -> &RequestHeader,
    serve: impl FnOnce(&Req) -> Result<Resp, StatusCode>,
) -> Vec<u8>
where
    Req: BinaryDecodable,
    Resp: BinaryEncodable,
{
    let codec = BodyCodec::shared();
    let request: Req = match codec.decode_at(body, at) {
        Ok(r) => r,
        Err(e) => return fault(codec, 0, e.status_code(), now),
    };
    let handle = header(&request).request_handle;
    match serve(&request) {
        Ok(response) => encode_or_fault(codec, response_id, &response, handle, now),
        Err(status) => fault(codec, handle, status, now),
    }
}

/// Read, the most frequent request: a plain request is parsed and its response written by [`read_codec`], anything
/// else goes through the generic codec (which also reports a malformed request).
fn read(space: &SharedAddressSpace, body: &[u8], at: usize, ctx: &RequestContext) -> Vec<u8> {
    let codec = BodyCodec::shared();
    let Some(args) = read_codec::decode_read_request(codec, body, at) else {
        let read = |r: &ReadRequest| space.read(ctx, r);
        return serve(body, at, ctx.now, ObjectId::ReadResponse_Encoding_DefaultBinary, |r| &r.request_header, read);
    };
    let handle = args.request_handle;
    match space.read_items(ctx, args.max_age, args.timestamps, &args.nodes) {
        Ok(results) => read_codec::encode_read_response(codec, ctx.now.ticks(), handle, &results).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "Read response does not encode");
            fault(codec, handle, e.status_code(), ctx.now)
        }),
        Err(status) => fault(codec, handle, status, ctx.now),
    }
}

macro_rules! simple {
    ($body:expr, $at:expr, $ctx:expr, $req:ty, $resp:ident, |$r:ident| $serve:expr) => {
        Reply::Ready(serve::<$req, _>(&$body, $at, $ctx.now, ObjectId::$resp, |r| &r.request_header, |$r| $serve))
    };
}

impl SessionServices for StandardServices {
    fn handle(&self, id: ObjectId, body: Vec<u8>, at: usize, ctx: RequestContext, _channel: &ChannelInfo) -> Reply {
        use ObjectId as O;
        let space = &self.space;
        match id {
            O::ReadRequest_Encoding_DefaultBinary => Reply::Ready(read(space, &body, at, &ctx)),
            O::WriteRequest_Encoding_DefaultBinary => {
                simple!(body, at, ctx, WriteRequest, WriteResponse_Encoding_DefaultBinary, |r| space.write(&ctx, r))
            }
            O::BrowseRequest_Encoding_DefaultBinary => {
                simple!(body, at, ctx, BrowseRequest, BrowseResponse_Encoding_DefaultBinary, |r| {
                    let mut points = self.continuation_points.lock();
                    space.browse(&ctx, r, points.entry(ctx.session_id.clone()).or_default())
                })
            }
            O::BrowseNextRequest_Encoding_DefaultBinary => {
                simple!(body, at, ctx, BrowseNextRequest, BrowseNextResponse_Encoding_DefaultBinary, |r| {
                    let mut points = self.continuation_points.lock();
                    space.browse_next(&ctx, r, points.entry(ctx.session_id.clone()).or_default())
                })
            }
            O::TranslateBrowsePathsToNodeIdsRequest_Encoding_DefaultBinary => simple!(
                body,
                at,
                ctx,
                TranslateBrowsePathsToNodeIdsRequest,
                TranslateBrowsePathsToNodeIdsResponse_Encoding_DefaultBinary,
                |r| space.translate_browse_paths(&ctx, r)
            ),
            O::RegisterNodesRequest_Encoding_DefaultBinary => {
                simple!(body, at, ctx, RegisterNodesRequest, RegisterNodesResponse_Encoding_DefaultBinary, |r| space
                    .register_nodes(&ctx, r))
            }
            O::UnregisterNodesRequest_Encoding_DefaultBinary => {
                simple!(body, at, ctx, UnregisterNodesRequest, UnregisterNodesResponse_Encoding_DefaultBinary, |r| {
                    space.unregister_nodes(&ctx, r)
                })
            }
            O::CallRequest_Encoding_DefaultBinary => {
                let codec = BodyCodec::shared();
                let request: CallRequest = match codec.decode_at(&body, at) {
                    Ok(r) => r,
                    Err(e) => return Reply::Ready(fault(codec, 0, e.status_code(), ctx.now)),
                };
                let space = space.clone();
                // Method handlers are the application's async code: they run after this returns.
                Reply::Later(Box::pin(async move {
                    let handle = request.request_header.request_handle;
                    match space.call(&ctx, &request).await {
                        Ok(response) => encode_or_fault(
                            codec,
                            ObjectId::CallResponse_Encoding_DefaultBinary,
                            &response,
                            handle,
                            ctx.now,
                        ),
                        Err(status) => fault(codec, handle, status, ctx.now),
                    }
                }))
            }
            O::CreateSubscriptionRequest_Encoding_DefaultBinary => simple!(
                body,
                at,
                ctx,
                CreateSubscriptionRequest,
                CreateSubscriptionResponse_Encoding_DefaultBinary,
                |r| self.with_engine(|e, _| e.create_subscription(&ctx, r))
            ),
            O::ModifySubscriptionRequest_Encoding_DefaultBinary => simple!(
                body,
                at,
                ctx,
                ModifySubscriptionRequest,
                ModifySubscriptionResponse_Encoding_DefaultBinary,
                |r| self.with_engine(|e, _| e.modify_subscription(&ctx, r))
            ),
            O::SetPublishingModeRequest_Encoding_DefaultBinary => simple!(
                body,
                at,
                ctx,
                SetPublishingModeRequest,
                SetPublishingModeResponse_Encoding_DefaultBinary,
                |r| self.with_engine(|e, _| e.set_publishing_mode(&ctx, r))
            ),
            O::DeleteSubscriptionsRequest_Encoding_DefaultBinary => simple!(
                body,
                at,
                ctx,
                DeleteSubscriptionsRequest,
                DeleteSubscriptionsResponse_Encoding_DefaultBinary,
                |r| self.with_engine(|e, _| e.delete_subscriptions(&ctx, r))
            ),
            O::CreateMonitoredItemsRequest_Encoding_DefaultBinary => simple!(
                body,
                at,
                ctx,
                CreateMonitoredItemsRequest,
                CreateMonitoredItemsResponse_Encoding_DefaultBinary,
                |r| self.with_engine(|e, s| e.create_monitored_items(&ctx, r, s))
            ),
            O::ModifyMonitoredItemsRequest_Encoding_DefaultBinary => simple!(
                body,
                at,
                ctx,
                ModifyMonitoredItemsRequest,
                ModifyMonitoredItemsResponse_Encoding_DefaultBinary,
                |r| self.with_engine(|e, s| e.modify_monitored_items(&ctx, r, s))
            ),
            O::SetMonitoringModeRequest_Encoding_DefaultBinary => simple!(
                body,
                at,
                ctx,
                SetMonitoringModeRequest,
                SetMonitoringModeResponse_Encoding_DefaultBinary,
                |r| self.with_engine(|e, s| e.set_monitoring_mode(&ctx, r, s))
            ),
            O::DeleteMonitoredItemsRequest_Encoding_DefaultBinary => simple!(
                body,
                at,
                ctx,
                DeleteMonitoredItemsRequest,
                DeleteMonitoredItemsResponse_Encoding_DefaultBinary,
                |r| self.with_engine(|e, _| e.delete_monitored_items(&ctx, r))
            ),
            O::RepublishRequest_Encoding_DefaultBinary => {
                simple!(body, at, ctx, RepublishRequest, RepublishResponse_Encoding_DefaultBinary, |r| self
                    .with_engine(|e, _| e.republish(&ctx, r)))
            }
            O::TransferSubscriptionsRequest_Encoding_DefaultBinary => simple!(
                body,
                at,
                ctx,
                TransferSubscriptionsRequest,
                TransferSubscriptionsResponse_Encoding_DefaultBinary,
                |r| self.with_engine(|e, _| e.transfer_subscriptions(&ctx, r))
            ),
            O::PublishRequest_Encoding_DefaultBinary => {
                let codec = BodyCodec::shared();
                match codec.decode_at::<PublishRequest>(&body, at) {
                    Ok(request) => self.publish(request, ctx),
                    Err(e) => Reply::Ready(fault(codec, 0, e.status_code(), ctx.now)),
                }
            }
            _ => {
                let codec = BodyCodec::shared();
                let handle = codec.decode_at::<RequestHeader>(&body, at).map_or(0, |h| h.request_handle);
                tracing::debug!(?id, "unsupported service");
                Reply::Ready(fault(codec, handle, StatusCode::BadServiceUnsupported, ctx.now))
            }
        }
    }

    fn session_closed(&self, session_id: &NodeId, delete_subscriptions: bool) {
        self.continuation_points.lock().remove(session_id);
        let mut engine = self.engine.engine.lock();
        engine.close_session(session_id, delete_subscriptions);
        self.engine.deliver(&mut engine);
    }

    fn channel_closed(&self, _secure_channel_id: u32) {
        // Publish requests of a dead channel can never be answered: drop them so a reactivated session's new
        // requests are the ones that get notifications. The waiters whose receivers are gone tell us which.
        let sessions: Vec<NodeId> = {
            let waiters = self.engine.waiters.lock();
            waiters.values().filter(|(tx, _)| tx.is_closed()).map(|(_, s)| s.clone()).collect()
        };
        if sessions.is_empty() {
            return;
        }
        let mut engine = self.engine.engine.lock();
        let mut waiters = self.engine.waiters.lock();
        for session in sessions {
            for token in engine.drop_publish_requests(&session) {
                waiters.remove(&token);
            }
        }
    }
}

/// The engine's driver: wakes at the engine's deadline or when a request changed something.
async fn drive(engine: Arc<Engine>, space: SharedAddressSpace) {
    let mut timer = Deadline::new();
    loop {
        let deadline = {
            let guard = space.read_guard();
            let mut e = engine.engine.lock();
            e.handle_timeout(Now::system(), &SpaceSampler(&guard));
            engine.deliver(&mut e);
            e.poll_timeout()
        };
        tokio::select! {
            () = timer.wait(deadline) => {}
            () = engine.wake.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::access::UserRole;
    use crate::server::address_space::tests::{ctx, machine};
    use opcua_types::{ReadResponse, ServiceFault};

    fn body(request: &ReadRequest) -> Vec<u8> {
        BodyCodec::shared().encode(ObjectId::ReadRequest_Encoding_DefaultBinary, request).expect("encode")
    }

    fn answer(space: &SharedAddressSpace, body: &[u8], ctx: &RequestContext) -> Vec<u8> {
        let (_, at) = BodyCodec::shared().peek_id(body).expect("id");
        read(space, body, at, ctx)
    }

    fn fault_status(response: &[u8]) -> StatusCode {
        let codec = BodyCodec::shared();
        let (id, at) = codec.peek_id(response).expect("id");
        assert_eq!(id, ObjectId::ServiceFault_Encoding_DefaultBinary, "a ServiceFault");
        codec.decode_at::<ServiceFault>(response, at).expect("fault").response_header.service_result
    }

    /// A plain Read takes `read_codec`'s path, the same Read with an audit entry id the generic one: both answer
    /// alike. The service faults Part 4 names come from both paths, and a malformed body is BadDecodingError.
    #[test]
    fn read_answers_alike_on_both_paths_and_faults_bad_requests() {
        let codec = BodyCodec::shared();
        let m = machine();
        let mut range = ReadValueId::from(&m.array);
        range.index_range = "1:2".parse().expect("range");
        let nodes = vec![
            ReadValueId::from(&m.speed),
            ReadValueId::from(&m.text),
            ReadValueId::from(&m.secret),
            ReadValueId::from(&NodeId::new(9, "nowhere")),
            range,
        ];
        let space = SharedAddressSpace::new(m.space);
        let ctx = ctx(UserRole::Anonymous);
        let plain = ReadRequest {
            request_header: RequestHeader { request_handle: 42, ..Default::default() },
            max_age: 0.0,
            timestamps_to_return: TimestampsToReturn::Both,
            nodes_to_read: Some(nodes),
        };
        let mut audited = plain.clone();
        audited.request_header.audit_entry_id = "audit-1".into();
        assert!(read_codec::decode_read_request(codec, &body(&plain), 4).is_some(), "plain: the direct path");
        assert!(read_codec::decode_read_request(codec, &body(&audited), 4).is_none(), "audited: the generic path");

        let decode = |response: Vec<u8>| -> ReadResponse {
            codec.decode_response(ObjectId::ReadResponse_Encoding_DefaultBinary, &response).expect("a ReadResponse")
        };
        let direct = decode(answer(&space, &body(&plain), &ctx));
        let generic = decode(answer(&space, &body(&audited), &ctx));
        assert_eq!(direct.results, generic.results);
        assert_eq!(direct.response_header.request_handle, 42);
        assert_eq!(direct.response_header.timestamp, ctx.now.utc);
        assert_eq!(direct.response_header, generic.response_header);
        let results = direct.results.unwrap_or_default();
        let statuses: Vec<_> = results.iter().map(DataValue::status).collect();
        assert_eq!(
            statuses,
            [
                StatusCode::Good,
                StatusCode::Good,
                StatusCode::BadNotReadable,
                StatusCode::BadNodeIdUnknown,
                StatusCode::Good
            ]
        );
        assert_eq!(results[4].value, Some(opcua_types::Variant::from(vec![20i32, 30])));

        for request in [&plain, &audited] {
            let mut too_many = request.clone();
            too_many.nodes_to_read = Some(vec![ReadValueId::from(&m.speed); 8]);
            assert_eq!(fault_status(&answer(&space, &body(&too_many), &ctx)), StatusCode::BadTooManyOperations);
            let mut none = request.clone();
            none.nodes_to_read = None;
            assert_eq!(fault_status(&answer(&space, &body(&none), &ctx)), StatusCode::BadNothingToDo);
            let mut stale = request.clone();
            stale.max_age = -1.0;
            assert_eq!(fault_status(&answer(&space, &body(&stale), &ctx)), StatusCode::BadMaxAgeInvalid);
            let whole = body(request);
            let cut = &whole[..whole.len() - 3];
            assert_eq!(fault_status(&answer(&space, cut, &ctx)), StatusCode::BadDecodingError);
        }
    }
}
