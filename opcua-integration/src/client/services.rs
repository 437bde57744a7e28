//! Typed service calls on a [`Session`]: Attribute (Read, Write), View (Browse, BrowseNext,
//! TranslateBrowsePathsToNodeIds, RegisterNodes, UnregisterNodes), Method (Call), Subscription and MonitoredItem
//! services. They take and return `opcua_types` structures; a bad ServiceResult or a ServiceFault is
//! [`Error::Remote`] with the server's status, while per-operation results are returned for the caller to judge
//! (except in the single-value conveniences, which turn a bad operation result into [`Error::Remote`] as well).
//!
//! Requests are sent once: after a lost channel they fail rather than being resent, because the server may already
//! have executed them.
//!
//! ```no_run
//! # async fn demo(session: &certvault_opcua::client::Session) -> certvault_opcua::Result<()> {
//! use opcua_types::{NodeId, ObjectId, Variant};
//! let node = NodeId::new(2, "Setpoint");
//! session.write_value(&node, Variant::from(42.5f64)).await?;
//! assert_eq!(session.read_value(&node).await?, Variant::from(42.5f64));
//! let children = session.browse_children(&ObjectId::ObjectsFolder.into()).await?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use opcua_types::{
    AttributeId, BrowseDescription, BrowseDescriptionResultMask, BrowseDirection, BrowseNextRequest, BrowsePath,
    BrowsePathResult, BrowseRequest, BrowseResult, ByteString, CallMethodRequest, CallMethodResult, CallRequest,
    CreateMonitoredItemsRequest, CreateSubscriptionRequest, CreateSubscriptionResponse, DataValue,
    DeleteMonitoredItemsRequest, DeleteSubscriptionsRequest, ModifyMonitoredItemsRequest, ModifySubscriptionRequest,
    ModifySubscriptionResponse, MonitoredItemCreateRequest, MonitoredItemCreateResult, MonitoredItemModifyRequest,
    MonitoredItemModifyResult, MonitoringMode, NodeClassMask, NodeId, NotificationMessage, ObjectId, PublishRequest,
    PublishResponse, ReadValueId, ReferenceDescription, ReferenceTypeId, RegisterNodesRequest, RepublishRequest,
    RequestHeader, SetMonitoringModeRequest, SetPublishingModeRequest, StatusCode, SubscriptionAcknowledgement,
    TimestampsToReturn, TransferResult, TransferSubscriptionsRequest, TranslateBrowsePathsToNodeIdsRequest,
    UnregisterNodesRequest, Variant, ViewDescription, WriteRequest, WriteValue,
};

use super::Session;
use crate::error::{Error, Result};
use crate::service::HasServiceResult;

/// A request with its response type and the encoding ids of both.
pub(crate) trait ServiceRequest: opcua_types::BinaryEncodable + Send {
    type Response: opcua_types::BinaryDecodable + HasServiceResult + Send;
    const REQUEST: ObjectId;
    const RESPONSE: ObjectId;
    fn header_mut(&mut self) -> &mut RequestHeader;
}

macro_rules! service_requests {
    ($($req:ident => $resp:ident),* $(,)?) => {$(
        impl ServiceRequest for opcua_types::$req {
            type Response = opcua_types::$resp;
            const REQUEST: ObjectId = service_requests!(@id $req);
            const RESPONSE: ObjectId = service_requests!(@id $resp);
            fn header_mut(&mut self) -> &mut RequestHeader {
                &mut self.request_header
            }
        }
    )*};
    (@id $t:ident) => { service_requests!(@encoding $t) };
    (@encoding CreateSessionRequest) => { ObjectId::CreateSessionRequest_Encoding_DefaultBinary };
    (@encoding CreateSessionResponse) => { ObjectId::CreateSessionResponse_Encoding_DefaultBinary };
    (@encoding ActivateSessionRequest) => { ObjectId::ActivateSessionRequest_Encoding_DefaultBinary };
    (@encoding ActivateSessionResponse) => { ObjectId::ActivateSessionResponse_Encoding_DefaultBinary };
    (@encoding CloseSessionRequest) => { ObjectId::CloseSessionRequest_Encoding_DefaultBinary };
    (@encoding CloseSessionResponse) => { ObjectId::CloseSessionResponse_Encoding_DefaultBinary };
    (@encoding ReadRequest) => { ObjectId::ReadRequest_Encoding_DefaultBinary };
    (@encoding ReadResponse) => { ObjectId::ReadResponse_Encoding_DefaultBinary };
    (@encoding WriteRequest) => { ObjectId::WriteRequest_Encoding_DefaultBinary };
    (@encoding WriteResponse) => { ObjectId::WriteResponse_Encoding_DefaultBinary };
    (@encoding BrowseRequest) => { ObjectId::BrowseRequest_Encoding_DefaultBinary };
    (@encoding BrowseResponse) => { ObjectId::BrowseResponse_Encoding_DefaultBinary };
    (@encoding BrowseNextRequest) => { ObjectId::BrowseNextRequest_Encoding_DefaultBinary };
    (@encoding BrowseNextResponse) => { ObjectId::BrowseNextResponse_Encoding_DefaultBinary };
    (@encoding TranslateBrowsePathsToNodeIdsRequest) => {
        ObjectId::TranslateBrowsePathsToNodeIdsRequest_Encoding_DefaultBinary
    };
    (@encoding TranslateBrowsePathsToNodeIdsResponse) => {
        ObjectId::TranslateBrowsePathsToNodeIdsResponse_Encoding_DefaultBinary
    };
    (@encoding CallRequest) => { ObjectId::CallRequest_Encoding_DefaultBinary };
    (@encoding CallResponse) => { ObjectId::CallResponse_Encoding_DefaultBinary };
    (@encoding RegisterNodesRequest) => { ObjectId::RegisterNodesRequest_Encoding_DefaultBinary };
    (@encoding RegisterNodesResponse) => { ObjectId::RegisterNodesResponse_Encoding_DefaultBinary };
    (@encoding UnregisterNodesRequest) => { ObjectId::UnregisterNodesRequest_Encoding_DefaultBinary };
    (@encoding UnregisterNodesResponse) => { ObjectId::UnregisterNodesResponse_Encoding_DefaultBinary };
    (@encoding CreateSubscriptionRequest) => { ObjectId::CreateSubscriptionRequest_Encoding_DefaultBinary };
    (@encoding CreateSubscriptionResponse) => { ObjectId::CreateSubscriptionResponse_Encoding_DefaultBinary };
    (@encoding ModifySubscriptionRequest) => { ObjectId::ModifySubscriptionRequest_Encoding_DefaultBinary };
    (@encoding ModifySubscriptionResponse) => { ObjectId::ModifySubscriptionResponse_Encoding_DefaultBinary };
    (@encoding DeleteSubscriptionsRequest) => { ObjectId::DeleteSubscriptionsRequest_Encoding_DefaultBinary };
    (@encoding DeleteSubscriptionsResponse) => { ObjectId::DeleteSubscriptionsResponse_Encoding_DefaultBinary };
    (@encoding CreateMonitoredItemsRequest) => { ObjectId::CreateMonitoredItemsRequest_Encoding_DefaultBinary };
    (@encoding CreateMonitoredItemsResponse) => { ObjectId::CreateMonitoredItemsResponse_Encoding_DefaultBinary };
    (@encoding ModifyMonitoredItemsRequest) => { ObjectId::ModifyMonitoredItemsRequest_Encoding_DefaultBinary };
    (@encoding ModifyMonitoredItemsResponse) => { ObjectId::ModifyMonitoredItemsResponse_Encoding_DefaultBinary };
    (@encoding DeleteMonitoredItemsRequest) => { ObjectId::DeleteMonitoredItemsRequest_Encoding_DefaultBinary };
    (@encoding DeleteMonitoredItemsResponse) => { ObjectId::DeleteMonitoredItemsResponse_Encoding_DefaultBinary };
    (@encoding SetMonitoringModeRequest) => { ObjectId::SetMonitoringModeRequest_Encoding_DefaultBinary };
    (@encoding SetMonitoringModeResponse) => { ObjectId::SetMonitoringModeResponse_Encoding_DefaultBinary };
    (@encoding SetPublishingModeRequest) => { ObjectId::SetPublishingModeRequest_Encoding_DefaultBinary };
    (@encoding SetPublishingModeResponse) => { ObjectId::SetPublishingModeResponse_Encoding_DefaultBinary };
    (@encoding PublishRequest) => { ObjectId::PublishRequest_Encoding_DefaultBinary };
    (@encoding PublishResponse) => { ObjectId::PublishResponse_Encoding_DefaultBinary };
    (@encoding RepublishRequest) => { ObjectId::RepublishRequest_Encoding_DefaultBinary };
    (@encoding RepublishResponse) => { ObjectId::RepublishResponse_Encoding_DefaultBinary };
    (@encoding TransferSubscriptionsRequest) => { ObjectId::TransferSubscriptionsRequest_Encoding_DefaultBinary };
    (@encoding TransferSubscriptionsResponse) => { ObjectId::TransferSubscriptionsResponse_Encoding_DefaultBinary };
}

service_requests!(
    CreateSessionRequest => CreateSessionResponse,
    ActivateSessionRequest => ActivateSessionResponse,
    CloseSessionRequest => CloseSessionResponse,
    ReadRequest => ReadResponse,
    WriteRequest => WriteResponse,
    BrowseRequest => BrowseResponse,
    BrowseNextRequest => BrowseNextResponse,
    TranslateBrowsePathsToNodeIdsRequest => TranslateBrowsePathsToNodeIdsResponse,
    CallRequest => CallResponse,
    RegisterNodesRequest => RegisterNodesResponse,
    UnregisterNodesRequest => UnregisterNodesResponse,
    CreateSubscriptionRequest => CreateSubscriptionResponse,
    ModifySubscriptionRequest => ModifySubscriptionResponse,
    DeleteSubscriptionsRequest => DeleteSubscriptionsResponse,
    CreateMonitoredItemsRequest => CreateMonitoredItemsResponse,
    ModifyMonitoredItemsRequest => ModifyMonitoredItemsResponse,
    DeleteMonitoredItemsRequest => DeleteMonitoredItemsResponse,
    SetMonitoringModeRequest => SetMonitoringModeResponse,
    SetPublishingModeRequest => SetPublishingModeResponse,
    PublishRequest => PublishResponse,
    RepublishRequest => RepublishResponse,
    TransferSubscriptionsRequest => TransferSubscriptionsResponse,
);

/// As many results as operations, or a decoding error: a server that answers a different count broke the
/// protocol, and matching results to operations by position would go wrong.
fn exactly<T>(what: &str, expected: usize, results: Option<Vec<T>>) -> Result<Vec<T>> {
    let results = results.unwrap_or_default();
    if results.len() != expected {
        return Err(Error::Decoding(format!("{what}: {} results for {expected} operations", results.len())));
    }
    Ok(results)
}

fn status_ok(status: StatusCode, what: &str) -> Result<()> {
    if status.is_bad() {
        return Err(Error::Remote { status, reason: what.to_owned() });
    }
    Ok(())
}

/// The parameters of CreateSubscription and ModifySubscription.
#[derive(Clone, Debug, PartialEq)]
pub struct SubscriptionSettings {
    /// Requested publishing interval.
    pub publishing_interval: Duration,
    /// Requested lifetime count (publishing intervals without a Publish request before the server deletes it).
    pub lifetime_count: u32,
    /// Requested keep-alive count (publishing intervals without notifications before a keep-alive).
    pub max_keep_alive_count: u32,
    /// Most notifications per Publish response (0: no limit).
    pub max_notifications_per_publish: u32,
    /// Relative priority.
    pub priority: u8,
}

impl Default for SubscriptionSettings {
    fn default() -> Self {
        SubscriptionSettings {
            publishing_interval: Duration::from_millis(500),
            lifetime_count: 60,
            max_keep_alive_count: 10,
            max_notifications_per_publish: 0,
            priority: 0,
        }
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Session {
    /// Read: the attributes in `nodes`, one DataValue each.
    pub async fn read(
        &self,
        nodes: Vec<ReadValueId>,
        timestamps: TimestampsToReturn,
        max_age: f64,
    ) -> Result<Vec<DataValue>> {
        let client = self.inner.connected_channel().await?;
        let results = self.inner.read_on(&client, &nodes, timestamps, max_age).await?;
        exactly("Read", nodes.len(), Some(results))
    }

    /// The Value attributes of `nodes` (source and server timestamps).
    pub async fn read_values(&self, nodes: &[NodeId]) -> Result<Vec<DataValue>> {
        self.read(nodes.iter().map(ReadValueId::from).collect(), TimestampsToReturn::Both, 0.0).await
    }

    /// The Value of one node; a bad status of the value is [`Error::Remote`].
    pub async fn read_value(&self, node: &NodeId) -> Result<Variant> {
        // Only the value is returned, so no timestamps are asked for: the server does not encode them and we do not
        // decode them (two DateTime conversions each way).
        let value =
            self.read(vec![ReadValueId::from(node)], TimestampsToReturn::Neither, 0.0).await?.pop().unwrap_or_default();
        status_ok(value.status(), "Read value")?;
        Ok(value.value.unwrap_or_default())
    }

    /// Write: one status per value.
    pub async fn write(&self, values: Vec<WriteValue>) -> Result<Vec<StatusCode>> {
        let count = values.len();
        let request = WriteRequest { request_header: RequestHeader::default(), nodes_to_write: Some(values) };
        let response = self.inner.send(request, None).await?;
        exactly("Write", count, response.results)
    }

    /// Writes the Value attribute of one node; a bad result is [`Error::Remote`].
    pub async fn write_value(&self, node: &NodeId, value: impl Into<Variant>) -> Result<()> {
        let write = WriteValue {
            node_id: node.clone(),
            attribute_id: AttributeId::Value as u32,
            index_range: Default::default(),
            value: DataValue::value_only(value.into()),
        };
        let status = self.write(vec![write]).await?.pop().unwrap_or(StatusCode::BadUnexpectedError);
        status_ok(status, "Write")
    }

    /// Browse: one result per description, at most `max_references` each (0: server's choice); continue with
    /// [`Session::browse_next`].
    pub async fn browse(
        &self,
        nodes: Vec<BrowseDescription>,
        max_references: u32,
        view: Option<ViewDescription>,
    ) -> Result<Vec<BrowseResult>> {
        let count = nodes.len();
        let request = BrowseRequest {
            request_header: RequestHeader::default(),
            view: view.unwrap_or_default(),
            requested_max_references_per_node: max_references,
            nodes_to_browse: Some(nodes),
        };
        let response = self.inner.send(request, None).await?;
        exactly("Browse", count, response.results)
    }

    /// BrowseNext with the continuation points of earlier results (`release`: only free them).
    pub async fn browse_next(&self, release: bool, continuation_points: Vec<ByteString>) -> Result<Vec<BrowseResult>> {
        let count = continuation_points.len();
        let request = BrowseNextRequest {
            request_header: RequestHeader::default(),
            release_continuation_points: release,
            continuation_points: Some(continuation_points),
        };
        let response = self.inner.send(request, None).await?;
        exactly("BrowseNext", count, response.results)
    }

    /// Every hierarchical forward reference of `node`, following continuation points.
    pub async fn browse_children(&self, node: &NodeId) -> Result<Vec<ReferenceDescription>> {
        let description = BrowseDescription {
            node_id: node.clone(),
            browse_direction: BrowseDirection::Forward,
            reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
            include_subtypes: true,
            node_class_mask: NodeClassMask::all().bits(),
            result_mask: BrowseDescriptionResultMask::all().bits(),
        };
        let mut result = self.browse(vec![description], 0, None).await?.pop().unwrap_or_default();
        let mut references = Vec::new();
        // Bounded, so a server that hands out continuation points forever cannot keep us here.
        for _ in 0..1000 {
            status_ok(result.status_code, "Browse")?;
            references.extend(result.references.take().unwrap_or_default());
            if result.continuation_point.is_null_or_empty() {
                return Ok(references);
            }
            let point = std::mem::take(&mut result.continuation_point);
            result = self.browse_next(false, vec![point]).await?.pop().unwrap_or_default();
        }
        Err(Error::EncodingLimitsExceeded("more than 1000 BrowseNext rounds".into()))
    }

    /// TranslateBrowsePathsToNodeIds.
    pub async fn translate_browse_paths(&self, paths: Vec<BrowsePath>) -> Result<Vec<BrowsePathResult>> {
        let count = paths.len();
        let request = TranslateBrowsePathsToNodeIdsRequest {
            request_header: RequestHeader::default(),
            browse_paths: Some(paths),
        };
        let response = self.inner.send(request, None).await?;
        exactly("TranslateBrowsePathsToNodeIds", count, response.results)
    }

    /// Call: one result per method call.
    pub async fn call(&self, methods: Vec<CallMethodRequest>) -> Result<Vec<CallMethodResult>> {
        self.call_inner(methods, None).await
    }

    /// As [`Session::call`], waiting at most `timeout` instead of the channel's timeout: a method that runs a
    /// machine operation may take longer than a read, and the server learns the timeout as the timeoutHint. After
    /// `timeout` the result is [`Error::Timeout`]; the method may still run to its end on the server.
    pub async fn call_with_timeout(
        &self,
        methods: Vec<CallMethodRequest>,
        timeout: Duration,
    ) -> Result<Vec<CallMethodResult>> {
        self.call_inner(methods, Some(timeout)).await
    }

    async fn call_inner(
        &self,
        methods: Vec<CallMethodRequest>,
        timeout: Option<Duration>,
    ) -> Result<Vec<CallMethodResult>> {
        let count = methods.len();
        let request = CallRequest { request_header: RequestHeader::default(), methods_to_call: Some(methods) };
        let response = self.inner.send(request, timeout).await?;
        exactly("Call", count, response.results)
    }

    /// Calls `method` on `object` with `args`; a bad result is [`Error::Remote`], otherwise the output arguments.
    pub async fn call_method(&self, object: &NodeId, method: &NodeId, args: Vec<Variant>) -> Result<Vec<Variant>> {
        let request =
            CallMethodRequest { object_id: object.clone(), method_id: method.clone(), input_arguments: Some(args) };
        let result = self.call(vec![request]).await?.pop().unwrap_or_default();
        status_ok(result.status_code, "Call")?;
        if let Some(bad) = result.input_argument_results.iter().flatten().find(|s| s.is_bad()) {
            return Err(Error::Remote { status: *bad, reason: "Call input argument".into() });
        }
        Ok(result.output_arguments.unwrap_or_default())
    }

    /// RegisterNodes: the ids to use instead (possibly the same).
    pub async fn register_nodes(&self, nodes: Vec<NodeId>) -> Result<Vec<NodeId>> {
        let count = nodes.len();
        let request = RegisterNodesRequest { request_header: RequestHeader::default(), nodes_to_register: Some(nodes) };
        let response = self.inner.send(request, None).await?;
        exactly("RegisterNodes", count, response.registered_node_ids)
    }

    /// UnregisterNodes.
    pub async fn unregister_nodes(&self, nodes: Vec<NodeId>) -> Result<()> {
        let request =
            UnregisterNodesRequest { request_header: RequestHeader::default(), nodes_to_unregister: Some(nodes) };
        self.inner.send(request, None).await.map(|_| ())
    }

    /// CreateSubscription. A subscription made this way is not served by the session's publish loop unless it
    /// came from [`Session::subscribe`]: use that for a stream of data changes.
    pub async fn create_subscription(
        &self,
        settings: &SubscriptionSettings,
        publishing_enabled: bool,
    ) -> Result<CreateSubscriptionResponse> {
        let request = CreateSubscriptionRequest {
            request_header: RequestHeader::default(),
            requested_publishing_interval: millis(settings.publishing_interval),
            requested_lifetime_count: settings.lifetime_count,
            requested_max_keep_alive_count: settings.max_keep_alive_count,
            max_notifications_per_publish: settings.max_notifications_per_publish,
            publishing_enabled,
            priority: settings.priority,
        };
        self.inner.send(request, None).await
    }

    /// ModifySubscription.
    pub async fn modify_subscription(
        &self,
        subscription_id: u32,
        settings: &SubscriptionSettings,
    ) -> Result<ModifySubscriptionResponse> {
        let request = ModifySubscriptionRequest {
            request_header: RequestHeader::default(),
            subscription_id,
            requested_publishing_interval: millis(settings.publishing_interval),
            requested_lifetime_count: settings.lifetime_count,
            requested_max_keep_alive_count: settings.max_keep_alive_count,
            max_notifications_per_publish: settings.max_notifications_per_publish,
            priority: settings.priority,
        };
        self.inner.send(request, None).await
    }

    /// DeleteSubscriptions: one status per id.
    pub async fn delete_subscriptions(&self, ids: Vec<u32>) -> Result<Vec<StatusCode>> {
        let count = ids.len();
        let request =
            DeleteSubscriptionsRequest { request_header: RequestHeader::default(), subscription_ids: Some(ids) };
        let response = self.inner.send(request, None).await?;
        exactly("DeleteSubscriptions", count, response.results)
    }

    /// CreateMonitoredItems.
    pub async fn create_monitored_items(
        &self,
        subscription_id: u32,
        timestamps: TimestampsToReturn,
        items: Vec<MonitoredItemCreateRequest>,
    ) -> Result<Vec<MonitoredItemCreateResult>> {
        let count = items.len();
        let request = CreateMonitoredItemsRequest {
            request_header: RequestHeader::default(),
            subscription_id,
            timestamps_to_return: timestamps,
            items_to_create: Some(items),
        };
        let response = self.inner.send(request, None).await?;
        exactly("CreateMonitoredItems", count, response.results)
    }

    /// ModifyMonitoredItems.
    pub async fn modify_monitored_items(
        &self,
        subscription_id: u32,
        timestamps: TimestampsToReturn,
        items: Vec<MonitoredItemModifyRequest>,
    ) -> Result<Vec<MonitoredItemModifyResult>> {
        let count = items.len();
        let request = ModifyMonitoredItemsRequest {
            request_header: RequestHeader::default(),
            subscription_id,
            timestamps_to_return: timestamps,
            items_to_modify: Some(items),
        };
        let response = self.inner.send(request, None).await?;
        exactly("ModifyMonitoredItems", count, response.results)
    }

    /// DeleteMonitoredItems.
    pub async fn delete_monitored_items(&self, subscription_id: u32, ids: Vec<u32>) -> Result<Vec<StatusCode>> {
        let count = ids.len();
        let request = DeleteMonitoredItemsRequest {
            request_header: RequestHeader::default(),
            subscription_id,
            monitored_item_ids: Some(ids),
        };
        let response = self.inner.send(request, None).await?;
        exactly("DeleteMonitoredItems", count, response.results)
    }

    /// SetMonitoringMode.
    pub async fn set_monitoring_mode(
        &self,
        subscription_id: u32,
        mode: MonitoringMode,
        ids: Vec<u32>,
    ) -> Result<Vec<StatusCode>> {
        let count = ids.len();
        let request = SetMonitoringModeRequest {
            request_header: RequestHeader::default(),
            subscription_id,
            monitoring_mode: mode,
            monitored_item_ids: Some(ids),
        };
        let response = self.inner.send(request, None).await?;
        exactly("SetMonitoringMode", count, response.results)
    }

    /// SetPublishingMode.
    pub async fn set_publishing_mode(&self, enabled: bool, subscription_ids: Vec<u32>) -> Result<Vec<StatusCode>> {
        let count = subscription_ids.len();
        let request = SetPublishingModeRequest {
            request_header: RequestHeader::default(),
            publishing_enabled: enabled,
            subscription_ids: Some(subscription_ids),
        };
        let response = self.inner.send(request, None).await?;
        exactly("SetPublishingMode", count, response.results)
    }

    /// Publish, waiting up to `timeout` (the server holds the request until it has something to send). The
    /// session's own publish loop does this for [`Session::subscribe`]; calling it directly competes with it.
    pub async fn publish(
        &self,
        acknowledgements: Vec<SubscriptionAcknowledgement>,
        timeout: Duration,
    ) -> Result<PublishResponse> {
        let request = PublishRequest {
            request_header: RequestHeader::default(),
            subscription_acknowledgements: Some(acknowledgements),
        };
        self.inner.send(request, Some(timeout)).await
    }

    /// Republish: one NotificationMessage the server still keeps.
    pub async fn republish(&self, subscription_id: u32, sequence_number: u32) -> Result<NotificationMessage> {
        let request = RepublishRequest {
            request_header: RequestHeader::default(),
            subscription_id,
            retransmit_sequence_number: sequence_number,
        };
        Ok(self.inner.send(request, None).await?.notification_message)
    }

    /// TransferSubscriptions to this session.
    pub async fn transfer_subscriptions(
        &self,
        subscription_ids: Vec<u32>,
        send_initial_values: bool,
    ) -> Result<Vec<TransferResult>> {
        let count = subscription_ids.len();
        let request = TransferSubscriptionsRequest {
            request_header: RequestHeader::default(),
            subscription_ids: Some(subscription_ids),
            send_initial_values,
        };
        let response = self.inner.send(request, None).await?;
        exactly("TransferSubscriptions", count, response.results)
    }
}
