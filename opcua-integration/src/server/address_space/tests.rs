//! Fixtures shared by the service tests: a small machine namespace on top of namespace 0.

use std::sync::Arc;
use std::time::{Duration, Instant};

use opcua_nodes::{AccessLevel, NodeType};
use opcua_types::{Argument, ByteString, DataTypeId, DateTime, NodeId, ObjectId, StatusCode, UAString, Variant};

use super::{AddressSpace, AddressSpaceLimits, MethodSpec, ObjectSpec, VariableSpec};
use crate::channel::secure_channel::Now;
use crate::server::access::{Principal, RequestContext, UserRole};
use crate::server::discovery::ApplicationInfo;

/// The test machine's namespace.
pub(crate) const NS: &str = "urn:certvault:test:machine";

/// ServerStatus.StartTime of every test space.
pub(crate) fn start() -> DateTime {
    DateTime::ymd_hms(2024, 5, 1, 8, 0, 0)
}

/// Small limits so tests can reach them.
pub(crate) fn limits() -> AddressSpaceLimits {
    AddressSpaceLimits {
        max_nodes_per_read: 7,
        max_nodes_per_write: 7,
        max_nodes_per_browse: 7,
        max_nodes_per_translate: 7,
        max_nodes_per_call: 7,
        max_nodes_per_register: 7,
        max_references_per_browse_node: 5,
        max_browse_continuation_points: 2,
    }
}

/// Namespace 0 only.
pub(crate) fn space() -> AddressSpace {
    let app = ApplicationInfo {
        application_uri: "urn:certvault:test:server".into(),
        product_uri: "urn:certvault:test:product".into(),
        application_name: "test server".into(),
    };
    AddressSpace::new(&app, limits(), start())
}

/// A request `ms` milliseconds after [`start`] by a caller of `role`.
pub(crate) fn ctx_at(role: UserRole, ms: i64) -> RequestContext {
    let instant = Instant::now() + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    let utc = DateTime::from(start().ticks() + ms * 10_000);
    RequestContext {
        principal: Arc::new(Principal { name: role.to_string(), role }),
        session_id: NodeId::new(1, 99u32),
        now: Now::new(instant, utc),
        security_mode: crate::channel::policy::SecurityMode::SignAndEncrypt,
    }
}

/// A request at [`start`] by a caller of `role`.
pub(crate) fn ctx(role: UserRole) -> RequestContext {
    ctx_at(role, 0)
}

/// An argument description.
pub(crate) fn argument(name: &str, data_type: DataTypeId) -> Argument {
    Argument { name: name.into(), data_type: data_type.into(), value_rank: -1, ..Default::default() }
}

/// The test machine and the ids of its nodes.
pub(crate) struct Machine {
    pub space: AddressSpace,
    pub machine: NodeId,
    /// Double 1450, writable by operators, EURange 0..3000.
    pub speed: NodeId,
    /// Int32, writable by administrators only.
    pub admin_only: NodeId,
    /// Int32 whose AccessLevel lets nobody read or write.
    pub secret: NodeId,
    /// Int32 array [10, 20, 30, 40], writable.
    pub array: NodeId,
    /// String "hello", writable.
    pub text: NodeId,
    /// ByteString [1, 2, 3, 4], writable.
    pub bytes: NodeId,
    /// UtcTime, writable.
    pub timestamp: NodeId,
    /// Number (abstract), writable.
    pub number: NodeId,
    /// Start(rpm: Double) -> (accepted: Double), operators.
    pub start: NodeId,
    /// Reset(), administrators only.
    pub reset: NodeId,
}

/// Builds the test machine below the Objects folder.
pub(crate) fn machine() -> Machine {
    let mut space = space();
    let ns = space.add_namespace(NS);
    let machine =
        space.add_object(ObjectSpec::new(NodeId::new(ns, "Machine"), "Machine", ObjectId::ObjectsFolder)).unwrap();
    let var = |id: &str| VariableSpec::new(NodeId::new(ns, format!("Machine.{id}")), id, machine.clone());
    let speed = space
        .add_variable(var("Speed").data_type(DataTypeId::Double).value(1450.0).writable().eu_range(0.0, 3000.0))
        .unwrap();
    let admin_only =
        space.add_variable(var("Limit").value(5i32).writable().write_role(UserRole::Administrator)).unwrap();
    let secret = space.add_variable(var("Secret").value(7i32)).unwrap();
    if let Some(NodeType::Variable(v)) = space.nodes.get_mut(&secret) {
        v.set_access_level(AccessLevel::empty());
    }
    let array = space.add_variable(var("Array").value(vec![10i32, 20, 30, 40]).writable()).unwrap();
    let text = space.add_variable(var("Text").value(UAString::from("hello")).writable()).unwrap();
    let bytes = space.add_variable(var("Bytes").value(ByteString::from(vec![1u8, 2, 3, 4])).writable()).unwrap();
    let timestamp = space.add_variable(var("Stamp").data_type(DataTypeId::UtcTime).value(start()).writable()).unwrap();
    let number = space.add_variable(var("Number").data_type(DataTypeId::Number).value(1i32).writable()).unwrap();
    let start = space
        .add_method(
            MethodSpec::new(NodeId::new(ns, "Machine.Start"), "Start", machine.clone(), |call| async move {
                match call.inputs.first() {
                    Some(Variant::Double(rpm)) if *rpm <= 3000.0 => Ok(vec![Variant::Double(*rpm)]),
                    _ => Err(StatusCode::BadOutOfRange),
                }
            })
            .inputs(vec![argument("rpm", DataTypeId::Double)])
            .outputs(vec![argument("accepted", DataTypeId::Double)]),
        )
        .unwrap();
    let reset = space
        .add_method(
            MethodSpec::new(NodeId::new(ns, "Machine.Reset"), "Reset", machine.clone(), |_| async { Ok(vec![]) })
                .call_role(UserRole::Administrator),
        )
        .unwrap();
    Machine { space, machine, speed, admin_only, secret, array, text, bytes, timestamp, number, start, reset }
}

#[test]
fn the_shared_handle_updates_process_values_with_checks() {
    use super::{AddressSpaceError, SharedAddressSpace};
    let Machine { space, speed, machine, .. } = machine();
    let shared = SharedAddressSpace::new(space);
    let other = shared.clone();
    other.set_value(&speed, 1500.0).unwrap();
    let value = shared.value(&speed).unwrap();
    assert_eq!(value.value, Some(Variant::Double(1500.0)));
    assert!(value.source_timestamp.is_some(), "set_value stamps the value");
    assert_eq!(shared.set_value(&speed, "fast"), Err(AddressSpaceError::TypeMismatch(speed.clone())));
    assert_eq!(shared.set_value(&machine, 1.0), Err(AddressSpaceError::NotAVariable(machine.clone())));
    let missing = NodeId::new(2, "missing");
    assert_eq!(shared.set_value(&missing, 1.0).map_err(|e| e.status_code()), Err(StatusCode::BadNodeIdUnknown));
    assert_eq!(
        shared.value(&speed).and_then(|v| v.value),
        Some(Variant::Double(1500.0)),
        "refused updates change nothing"
    );
}
