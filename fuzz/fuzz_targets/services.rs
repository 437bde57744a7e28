//! The server's service layer: request bodies of every service an activated session may send, routed through
//! `server::Services` into the address space (Read, Write, Browse, BrowseNext, Translate, Call, Register) and the
//! subscription engine (Create/Modify/Delete Subscription and MonitoredItems, SetPublishingMode, SetMonitoringMode,
//! Publish, Republish, TransferSubscriptions), and the session services themselves.
//!
//! Input: a selector byte picks the request type from `REQUESTS`; the target writes that type's encoding id and a
//! RequestHeader carrying a live session's authentication token, and the fuzzer's bytes are the rest of the
//! structure. So the fuzzer gets past the session check and reaches the decoders and every service's logic. With
//! selector bit 0x80 the bytes are the whole body instead (type id, header and all), reaching the router's own
//! decoding and the session checks. The anonymous role is administrator here, so Write and Call run their handlers.
//!
//! State: one server (address space, subscription engine, session) per process, as in a real server that lives
//! long; Reply::Later futures (Call handlers, Publish) are driven for at most a few milliseconds.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use certvault_opcua::channel::policy::{SecurityMode, SecurityPolicy};
use certvault_opcua::channel::secure_channel::Now;
use certvault_opcua::server::access::UserRole;
use certvault_opcua::server::address_space::{MethodSpec, ObjectSpec, VariableSpec};
use certvault_opcua::server::{
    AddressSpace, AddressSpaceLimits, ApplicationInfo, Authenticator, Discovery, Services, SessionLimits,
    SessionManager, SharedAddressSpace, StandardServices, SubscriptionLimits, UserDatabase, UserTokenKinds,
};
use certvault_opcua::service::BodyCodec;
use certvault_opcua::transport::tcp::{ChannelInfo, Reply, ServiceHandler};
use libfuzzer_sys::fuzz_target;
use opcua_types::{
    ActivateSessionRequest, BinaryEncodable, ByteString, CreateSessionRequest, CreateSessionResponse, DataTypeId,
    DateTime, NodeId, ObjectId, RequestHeader, Variant,
};

const REQUESTS: [ObjectId; 22] = [
    ObjectId::ReadRequest_Encoding_DefaultBinary,
    ObjectId::WriteRequest_Encoding_DefaultBinary,
    ObjectId::BrowseRequest_Encoding_DefaultBinary,
    ObjectId::BrowseNextRequest_Encoding_DefaultBinary,
    ObjectId::TranslateBrowsePathsToNodeIdsRequest_Encoding_DefaultBinary,
    ObjectId::RegisterNodesRequest_Encoding_DefaultBinary,
    ObjectId::UnregisterNodesRequest_Encoding_DefaultBinary,
    ObjectId::CallRequest_Encoding_DefaultBinary,
    ObjectId::CreateSubscriptionRequest_Encoding_DefaultBinary,
    ObjectId::ModifySubscriptionRequest_Encoding_DefaultBinary,
    ObjectId::SetPublishingModeRequest_Encoding_DefaultBinary,
    ObjectId::DeleteSubscriptionsRequest_Encoding_DefaultBinary,
    ObjectId::CreateMonitoredItemsRequest_Encoding_DefaultBinary,
    ObjectId::ModifyMonitoredItemsRequest_Encoding_DefaultBinary,
    ObjectId::SetMonitoringModeRequest_Encoding_DefaultBinary,
    ObjectId::DeleteMonitoredItemsRequest_Encoding_DefaultBinary,
    ObjectId::PublishRequest_Encoding_DefaultBinary,
    ObjectId::RepublishRequest_Encoding_DefaultBinary,
    ObjectId::TransferSubscriptionsRequest_Encoding_DefaultBinary,
    ObjectId::ActivateSessionRequest_Encoding_DefaultBinary,
    ObjectId::CancelRequest_Encoding_DefaultBinary,
    ObjectId::GetEndpointsRequest_Encoding_DefaultBinary,
];

struct Harness {
    rt: tokio::runtime::Runtime,
    services: Services,
    channel: ChannelInfo,
    token: NodeId,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let info = ApplicationInfo {
            application_uri: "urn:fuzz:server".into(),
            product_uri: "urn:fuzz".into(),
            application_name: "fuzz".into(),
        };
        let mut space = AddressSpace::new(&info, AddressSpaceLimits::default(), DateTime::now());
        let ns = space.add_namespace("urn:fuzz:machine");
        let machine = space.add_object(ObjectSpec::new(NodeId::new(ns, "M"), "M", ObjectId::ObjectsFolder)).unwrap();
        for (name, value) in [("D", Variant::Double(1.5)), ("I", Variant::Int32(7)), ("S", Variant::from("text"))] {
            space
                .add_variable(VariableSpec::new(NodeId::new(ns, name), name, machine.clone()).value(value).writable())
                .unwrap();
        }
        space
            .add_variable(
                VariableSpec::new(NodeId::new(ns, "A"), "A", machine.clone())
                    .data_type(DataTypeId::Double)
                    .value(0.0)
                    .writable()
                    .eu_range(0.0, 100.0),
            )
            .unwrap();
        space
            .add_method(MethodSpec::new(NodeId::new(ns, "M.F"), "F", machine, |call| async move { Ok(call.inputs) }))
            .unwrap();
        let space = SharedAddressSpace::new(space);
        let endpoints = [(SecurityPolicy::None, SecurityMode::None)];
        let discovery = Discovery::new(&info, "opc.tcp://127.0.0.1:4840/", &[], &endpoints, UserTokenKinds::default());
        let mut users = UserDatabase::empty();
        users.set_anonymous_role(UserRole::Administrator);
        let authenticator =
            Authenticator { kinds: UserTokenKinds::default(), users: Arc::new(users), user_pki: None, identity: None };
        let limits = SubscriptionLimits { min_publishing_interval_ms: 1.0, ..SubscriptionLimits::default() };
        let standard = rt.block_on(async { StandardServices::start(space, limits) });
        let services = Services::new(
            discovery,
            SessionManager::new(SessionLimits::default()),
            authenticator,
            None,
            standard,
            16 << 20,
            true,
        );
        let channel = ChannelInfo {
            secure_channel_id: 1,
            policy: SecurityPolicy::None,
            mode: SecurityMode::None,
            peer_certificate: None,
            local_identity: None,
        };
        let codec = BodyCodec::new();
        let create = CreateSessionRequest {
            request_header: RequestHeader::new(&NodeId::null(), &DateTime::now(), 1),
            session_name: "fuzz".into(),
            requested_session_timeout: 3_600_000.0,
            ..Default::default()
        };
        let body = codec.encode(ObjectId::CreateSessionRequest_Encoding_DefaultBinary, &create).unwrap();
        let response = run(&rt, services.handle(body, &channel, Now::system())).unwrap();
        let created: CreateSessionResponse =
            codec.decode_response(ObjectId::CreateSessionResponse_Encoding_DefaultBinary, &response).unwrap();
        let token = created.authentication_token;
        let activate = ActivateSessionRequest {
            request_header: RequestHeader::new(&token, &DateTime::now(), 2),
            ..Default::default()
        };
        let body = codec.encode(ObjectId::ActivateSessionRequest_Encoding_DefaultBinary, &activate).unwrap();
        let response = run(&rt, services.handle(body, &channel, Now::system())).unwrap();
        codec
            .decode_response::<opcua_types::ActivateSessionResponse>(
                ObjectId::ActivateSessionResponse_Encoding_DefaultBinary,
                &response,
            )
            .unwrap();
        Harness { rt, services, channel, token }
    })
}

/// The response of a reply, waiting a few milliseconds at most for a later one (Publish may wait much longer).
fn run(rt: &tokio::runtime::Runtime, reply: Reply) -> Option<Vec<u8>> {
    match reply {
        Reply::Ready(bytes) => Some(bytes),
        Reply::Later(future) => rt.block_on(async { tokio::time::timeout(Duration::from_millis(5), future).await.ok() }),
    }
}

fuzz_target!(
    init: {
        harness();
    },
    |data: &[u8]| {
        let Some((&selector, rest)) = data.split_first() else { return };
        let h = harness();
        let body = if selector & 0x80 != 0 {
            rest.to_vec()
        } else {
            let ctx = opcua_types::ContextOwned::default();
            let ctx = ctx.context();
            let id = REQUESTS[selector as usize % REQUESTS.len()];
            let mut body = Vec::with_capacity(64 + rest.len());
            NodeId::from(id as u32).encode(&mut body, &ctx).unwrap();
            RequestHeader::new(&h.token, &DateTime::now(), 7).encode(&mut body, &ctx).unwrap();
            body.extend_from_slice(rest);
            body
        };
        if let Some(response) = run(&h.rt, h.services.handle(body, &h.channel, Now::system())) {
            // Every answer is a well-formed body: a response or a ServiceFault.
            assert!(BodyCodec::new().peek_id(&response).is_ok(), "an undecodable response");
        }
        let _ = ByteString::null();
    }
);
