//! The Read service, and the sampling the subscription engine does with the same rules.

use opcua_nodes::{AccessLevel, Method, NodeBase, NodeType, Variable};
use opcua_types::{
    AttributeId, DataEncoding, DataTypeId, DataValue, LocalizedText, NodeId, NumericRange, QualifiedName, Range,
    ReadRequest, ReadResponse, ReadValueId, ResponseHeader, StatusCode, TimestampsToReturn, Variant,
};

use super::{check_operation_count, index_range, AddressSpace};
use crate::server::access::{RequestContext, UserRole};

/// Keeps the timestamps the client asked for.
fn keep_timestamps(mut value: DataValue, timestamps: TimestampsToReturn) -> DataValue {
    let (source, server) = match timestamps {
        TimestampsToReturn::Source => (true, false),
        TimestampsToReturn::Server => (false, true),
        TimestampsToReturn::Both => (true, true),
        TimestampsToReturn::Neither | TimestampsToReturn::Invalid => (false, false),
    };
    if !source {
        value.source_timestamp = None;
        value.source_picoseconds = None;
    }
    if !server {
        value.server_timestamp = None;
        value.server_picoseconds = None;
    }
    value
}

fn failed(status: StatusCode) -> DataValue {
    DataValue { status: Some(status), ..Default::default() }
}

fn is_null_name(name: &QualifiedName) -> bool {
    name.namespace_index == 0 && name.name.is_empty()
}

impl AddressSpace {
    /// Read service. Service faults: BadNothingToDo, BadTooManyOperations, BadMaxAgeInvalid (negative or NaN),
    /// BadTimestampsToReturnInvalid. Values are always current (a maxAge of 0 and of anything else are served
    /// alike: there is no cache to be stale).
    pub fn read(&self, ctx: &RequestContext, request: &ReadRequest) -> Result<ReadResponse, StatusCode> {
        let results = self.read_items(ctx, request.max_age, request.timestamps_to_return, &request.nodes_to_read)?;
        Ok(ReadResponse {
            response_header: ResponseHeader::new_timestamped_service_result(
                ctx.now.utc,
                &request.request_header,
                StatusCode::Good,
            ),
            results: Some(results),
            diagnostic_infos: None,
        })
    }

    /// The results of a Read of `items` (see [`AddressSpace::read`], whose faults this returns), for a caller that
    /// encodes the response itself ([`crate::read_codec`]).
    pub fn read_items(
        &self,
        ctx: &RequestContext,
        max_age: f64,
        timestamps: TimestampsToReturn,
        items: &Option<Vec<ReadValueId>>,
    ) -> Result<Vec<DataValue>, StatusCode> {
        let items = check_operation_count(items, self.limits.max_nodes_per_read)?;
        if max_age.is_nan() || max_age < 0.0 {
            return Err(StatusCode::BadMaxAgeInvalid);
        }
        if timestamps == TimestampsToReturn::Invalid {
            return Err(StatusCode::BadTimestampsToReturnInvalid);
        }
        Ok(items.iter().map(|item| self.sample(ctx, item, timestamps)).collect())
    }

    /// Reads one attribute as Read would, the operation's failure in the DataValue's status. The subscription
    /// engine samples monitored items with this.
    pub fn sample(&self, ctx: &RequestContext, item: &ReadValueId, timestamps: TimestampsToReturn) -> DataValue {
        if timestamps == TimestampsToReturn::Invalid {
            return failed(StatusCode::BadTimestampsToReturnInvalid);
        }
        match self.read_attribute(ctx, item) {
            Ok(value) => keep_timestamps(value, timestamps),
            Err(status) => {
                tracing::trace!(node = %item.node_id, attribute = item.attribute_id, %status, "read refused");
                failed(status)
            }
        }
    }

    /// The low and high limit of an analog item's EURange property, for percent deadbands.
    pub fn eu_range(&self, id: &NodeId) -> Option<(f64, f64)> {
        let property = self.child(id, &QualifiedName::new(0, "EURange"))?;
        let Some(Variant::ExtensionObject(object)) = self.value(property)?.value else { return None };
        object.inner_as::<Range>().map(|r| (r.low, r.high))
    }

    /// AccessLevel reduced to what `ctx`'s role may do: writing needs the variable's write role.
    pub(crate) fn user_access_level(&self, ctx: &RequestContext, variable: &Variable) -> AccessLevel {
        let mut level = variable.access_level() & variable.user_access_level();
        if !ctx.principal.role.allows(self.write_role(variable.node_id())) {
            level.remove(
                AccessLevel::CURRENT_WRITE
                    | AccessLevel::STATUS_WRITE
                    | AccessLevel::TIMESTAMP_WRITE
                    | AccessLevel::HISTORY_WRITE,
            );
        }
        level
    }

    /// Whether `ctx`'s role may call the method (and it has an implementation).
    pub(crate) fn user_executable(&self, ctx: &RequestContext, method: &Method) -> bool {
        method.executable()
            && method.user_executable()
            && self.methods.get(method.node_id()).is_some_and(|m| ctx.principal.role.allows(m.call_role))
    }

    /// Encodings apply only to structured values (Part 4 §5.10.2): anything else asking for one is
    /// BadDataEncodingInvalid, a structure asking for other than Default Binary BadDataEncodingUnsupported.
    fn check_encoding(
        &self,
        node: &NodeType,
        attribute: AttributeId,
        encoding: &QualifiedName,
    ) -> Result<(), StatusCode> {
        if is_null_name(encoding) {
            return Ok(());
        }
        let data_type = match (node, attribute) {
            (NodeType::Variable(v), AttributeId::Value) => v.data_type(),
            (NodeType::VariableType(v), AttributeId::Value) => v.data_type().clone(),
            _ => return Err(StatusCode::BadDataEncodingInvalid),
        };
        if !self.is_subtype_of(&data_type, &DataTypeId::Structure.into()) {
            return Err(StatusCode::BadDataEncodingInvalid);
        }
        match encoding.namespace_index == 0 && encoding.name.as_ref() == "Default Binary" {
            true => Ok(()),
            false => Err(StatusCode::BadDataEncodingUnsupported),
        }
    }

    fn read_attribute(&self, ctx: &RequestContext, item: &ReadValueId) -> Result<DataValue, StatusCode> {
        let node = self.nodes.get(&item.node_id).ok_or(StatusCode::BadNodeIdUnknown)?;
        let attribute = AttributeId::from_u32(item.attribute_id).map_err(|_| StatusCode::BadAttributeIdInvalid)?;
        self.check_encoding(node, attribute, &item.data_encoding)?;
        let value = match (node, attribute) {
            (NodeType::Variable(variable), AttributeId::Value) => {
                return self.read_variable_value(ctx, variable, &item.index_range)
            }
            (NodeType::Variable(variable), AttributeId::UserAccessLevel) => {
                Variant::Byte(self.user_access_level(ctx, variable).bits())
            }
            (NodeType::Variable(variable), AttributeId::AccessLevelEx) => {
                Variant::UInt32(u32::from(variable.access_level().bits()))
            }
            (NodeType::Method(method), AttributeId::UserExecutable) => {
                Variant::Boolean(self.user_executable(ctx, method))
            }
            // Changing attributes is for administrators (see the module documentation).
            (_, AttributeId::UserWriteMask) => Variant::UInt32(match ctx.principal.role {
                UserRole::Administrator => node.as_node().write_mask().map_or(0, |m| m.bits()),
                _ => 0,
            }),
            (_, attribute) => {
                match node.as_node().get_attribute(
                    TimestampsToReturn::Neither,
                    attribute,
                    &NumericRange::None,
                    &DataEncoding::Binary,
                ) {
                    Some(value) => value.value.unwrap_or_default(),
                    // Optional attributes every node class has: absent means empty, not unsupported.
                    None => match attribute {
                        AttributeId::Description => LocalizedText::null().into(),
                        AttributeId::WriteMask => Variant::UInt32(0),
                        _ => return Err(StatusCode::BadAttributeIdInvalid),
                    },
                }
            }
        };
        let value = index_range::read(&value, &item.index_range)?;
        Ok(DataValue {
            value: Some(value),
            status: Some(StatusCode::Good),
            server_timestamp: Some(ctx.now.utc),
            ..Default::default()
        })
    }

    fn read_variable_value(
        &self,
        ctx: &RequestContext,
        variable: &Variable,
        range: &NumericRange,
    ) -> Result<DataValue, StatusCode> {
        if !variable.access_level().contains(AccessLevel::CURRENT_READ) {
            return Err(StatusCode::BadNotReadable);
        }
        if !self.user_access_level(ctx, variable).contains(AccessLevel::CURRENT_READ) {
            return Err(StatusCode::BadUserAccessDenied);
        }
        let callback = self.variables.get(variable.node_id()).and_then(|b| b.on_read.as_ref());
        let mut value = match callback {
            Some(read) => DataValue {
                value: Some(read(ctx)?),
                status: Some(StatusCode::Good),
                source_timestamp: Some(ctx.now.utc),
                ..Default::default()
            },
            None => variable.value(TimestampsToReturn::Both, &NumericRange::None, &DataEncoding::Binary, 0.0),
        };
        if range.has_range() {
            let whole = value.value.take().unwrap_or_default();
            value.value = Some(index_range::read(&whole, range)?);
        }
        value.server_timestamp = Some(ctx.now.utc);
        value.server_picoseconds = None;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use opcua_types::{ByteString, NodeClass, ObjectId, UAString, VariableId};

    use super::*;
    use crate::server::address_space::tests::{ctx, ctx_at, machine, space, Machine};
    use crate::server::address_space::VariableSpec;

    fn item(id: &NodeId, attribute: AttributeId) -> ReadValueId {
        ReadValueId { node_id: id.clone(), attribute_id: attribute as u32, ..Default::default() }
    }

    fn request(items: Vec<ReadValueId>) -> ReadRequest {
        ReadRequest {
            max_age: 0.0,
            timestamps_to_return: TimestampsToReturn::Both,
            nodes_to_read: Some(items),
            ..Default::default()
        }
    }

    fn read_one(space: &AddressSpace, role: UserRole, item: ReadValueId) -> DataValue {
        let response = space.read(&ctx(role), &request(vec![item])).expect("read");
        response.results.and_then(|r| r.into_iter().next()).expect("one result")
    }

    #[test]
    fn service_faults() {
        let Machine { space, speed, .. } = machine();
        let ctx = ctx(UserRole::Anonymous);
        assert_eq!(space.read(&ctx, &request(vec![])).err(), Some(StatusCode::BadNothingToDo));
        let too_many = request(vec![item(&speed, AttributeId::Value); 8]);
        assert_eq!(space.read(&ctx, &too_many).err(), Some(StatusCode::BadTooManyOperations));
        let at_limit = request(vec![item(&speed, AttributeId::Value); 7]);
        assert_eq!(space.read(&ctx, &at_limit).map(|r| r.results.map(|r| r.len())), Ok(Some(7)));
        let negative = ReadRequest { max_age: -1.0, ..request(vec![item(&speed, AttributeId::Value)]) };
        assert_eq!(space.read(&ctx, &negative).err(), Some(StatusCode::BadMaxAgeInvalid));
        let invalid = ReadRequest {
            timestamps_to_return: TimestampsToReturn::Invalid,
            ..request(vec![item(&speed, AttributeId::Value)])
        };
        assert_eq!(space.read(&ctx, &invalid).err(), Some(StatusCode::BadTimestampsToReturnInvalid));
    }

    #[test]
    fn the_response_header_is_stamped_with_the_request_time() {
        let Machine { space, speed, .. } = machine();
        let ctx = ctx_at(UserRole::Anonymous, 42);
        let mut req = request(vec![item(&speed, AttributeId::Value)]);
        req.request_header.request_handle = 77;
        let response = space.read(&ctx, &req).unwrap();
        assert_eq!(response.response_header.timestamp, ctx.now.utc);
        assert_eq!(response.response_header.request_handle, 77);
        assert_eq!(response.response_header.service_result, StatusCode::Good);
    }

    #[test]
    fn operation_level_status_codes() {
        let Machine { space, speed, secret, .. } = machine();
        let unknown = NodeId::new(2, "nope");
        assert_eq!(
            read_one(&space, UserRole::Anonymous, item(&unknown, AttributeId::Value)).status,
            Some(StatusCode::BadNodeIdUnknown)
        );
        let folder: NodeId = ObjectId::ObjectsFolder.into();
        assert_eq!(
            read_one(&space, UserRole::Anonymous, item(&folder, AttributeId::Value)).status,
            Some(StatusCode::BadAttributeIdInvalid),
            "objects have no Value"
        );
        let bogus = ReadValueId { attribute_id: 99, ..item(&speed, AttributeId::Value) };
        assert_eq!(read_one(&space, UserRole::Anonymous, bogus).status, Some(StatusCode::BadAttributeIdInvalid));
        let binary = QualifiedName::new(0, "Default Binary");
        let encoded = ReadValueId { data_encoding: binary.clone(), ..item(&speed, AttributeId::Value) };
        assert_eq!(read_one(&space, UserRole::Anonymous, encoded).status, Some(StatusCode::BadDataEncodingInvalid));
        let on_name = ReadValueId { data_encoding: binary.clone(), ..item(&speed, AttributeId::BrowseName) };
        assert_eq!(read_one(&space, UserRole::Anonymous, on_name).status, Some(StatusCode::BadDataEncodingInvalid));
        let status: NodeId = VariableId::Server_ServerStatus.into();
        let structured = ReadValueId { data_encoding: binary, ..item(&status, AttributeId::Value) };
        assert_eq!(read_one(&space, UserRole::Anonymous, structured).status, Some(StatusCode::Good));
        let xml =
            ReadValueId { data_encoding: QualifiedName::new(0, "Default XML"), ..item(&status, AttributeId::Value) };
        assert_eq!(read_one(&space, UserRole::Anonymous, xml).status, Some(StatusCode::BadDataEncodingUnsupported));
        // A variable whose AccessLevel lets nobody read, and one whose UserAccessLevel lets no user read.
        assert_eq!(
            read_one(&space, UserRole::Administrator, item(&secret, AttributeId::Value)).status,
            Some(StatusCode::BadNotReadable)
        );
    }

    #[test]
    fn user_access_denied_when_the_user_access_level_forbids_reading() {
        let Machine { mut space, speed, .. } = machine();
        if let Some(NodeType::Variable(v)) = space.nodes.get_mut(&speed) {
            v.set_user_access_level(AccessLevel::empty());
        }
        assert_eq!(
            read_one(&space, UserRole::Administrator, item(&speed, AttributeId::Value)).status,
            Some(StatusCode::BadUserAccessDenied)
        );
    }

    #[test]
    fn every_attribute_of_every_node_class() {
        let Machine { space, speed, start, machine, .. } = machine();
        let cases: Vec<(NodeId, NodeClass)> = vec![
            (machine.clone(), NodeClass::Object),
            (speed.clone(), NodeClass::Variable),
            (start.clone(), NodeClass::Method),
            (opcua_types::ObjectTypeId::FolderType.into(), NodeClass::ObjectType),
            (opcua_types::VariableTypeId::PropertyType.into(), NodeClass::VariableType),
            (opcua_types::ReferenceTypeId::Organizes.into(), NodeClass::ReferenceType),
            (DataTypeId::Double.into(), NodeClass::DataType),
            (ObjectId::RootFolder.into(), NodeClass::Object),
        ];
        for (id, class) in cases {
            let got = |a: AttributeId| read_one(&space, UserRole::Operator, item(&id, a));
            assert_eq!(got(AttributeId::NodeClass).value, Some(Variant::Int32(class as i32)), "{id}");
            assert_eq!(got(AttributeId::NodeId).value, Some(Variant::from(id.clone())));
            for common in [
                AttributeId::BrowseName,
                AttributeId::DisplayName,
                AttributeId::Description,
                AttributeId::WriteMask,
                AttributeId::UserWriteMask,
            ] {
                assert_eq!(got(common).status, Some(StatusCode::Good), "{id} {common:?}");
            }
            let specific: &[AttributeId] = match class {
                NodeClass::Object => &[AttributeId::EventNotifier],
                NodeClass::Variable => &[
                    AttributeId::Value,
                    AttributeId::DataType,
                    AttributeId::ValueRank,
                    AttributeId::AccessLevel,
                    AttributeId::UserAccessLevel,
                    AttributeId::Historizing,
                    AttributeId::AccessLevelEx,
                ],
                NodeClass::Method => &[AttributeId::Executable, AttributeId::UserExecutable],
                NodeClass::ObjectType => &[AttributeId::IsAbstract],
                NodeClass::VariableType => &[AttributeId::DataType, AttributeId::ValueRank, AttributeId::IsAbstract],
                NodeClass::ReferenceType => &[AttributeId::IsAbstract, AttributeId::Symmetric],
                NodeClass::DataType => &[AttributeId::IsAbstract],
                _ => &[],
            };
            for attribute in specific {
                assert_eq!(got(*attribute).status, Some(StatusCode::Good), "{id} {attribute:?}");
            }
            let foreign = if class == NodeClass::Variable { AttributeId::IsAbstract } else { AttributeId::AccessLevel };
            assert_eq!(got(foreign).status, Some(StatusCode::BadAttributeIdInvalid), "{id} {foreign:?}");
        }
    }

    #[test]
    fn user_access_level_and_user_executable_follow_the_role() {
        let Machine { space, speed, admin_only, start, .. } = machine();
        let level = |role, id: &NodeId| read_one(&space, role, item(id, AttributeId::UserAccessLevel)).value;
        assert_eq!(level(UserRole::Anonymous, &speed), Some(Variant::Byte(AccessLevel::CURRENT_READ.bits())));
        let read_write = (AccessLevel::CURRENT_READ | AccessLevel::CURRENT_WRITE).bits();
        assert_eq!(level(UserRole::Operator, &speed), Some(Variant::Byte(read_write)));
        assert_eq!(level(UserRole::Operator, &admin_only), Some(Variant::Byte(AccessLevel::CURRENT_READ.bits())));
        assert_eq!(level(UserRole::Administrator, &admin_only), Some(Variant::Byte(read_write)));
        assert_eq!(
            read_one(&space, UserRole::Anonymous, item(&speed, AttributeId::AccessLevel)).value,
            Some(Variant::Byte(read_write)),
            "AccessLevel itself does not depend on the caller"
        );
        let executable = |role| read_one(&space, role, item(&start, AttributeId::UserExecutable)).value;
        assert_eq!(executable(UserRole::Observer), Some(Variant::Boolean(false)));
        assert_eq!(executable(UserRole::Operator), Some(Variant::Boolean(true)));
    }

    #[test]
    fn index_ranges_on_arrays_strings_and_byte_strings() {
        let Machine { space, array, text, bytes, speed, .. } = machine();
        let ranged = |id: &NodeId, range: NumericRange| {
            read_one(&space, UserRole::Anonymous, ReadValueId { index_range: range, ..item(id, AttributeId::Value) })
        };
        assert_eq!(ranged(&array, NumericRange::Range(1, 2)).value, Some(Variant::from(vec![20i32, 30])));
        assert_eq!(ranged(&text, NumericRange::Range(0, 1)).value, Some(Variant::from(UAString::from("he"))));
        assert_eq!(ranged(&bytes, NumericRange::Index(2)).value, Some(Variant::from(ByteString::from(vec![3u8]))));
        assert_eq!(ranged(&array, NumericRange::Index(9)).status, Some(StatusCode::BadIndexRangeNoData));
        assert_eq!(ranged(&text, NumericRange::Index(5)).status, Some(StatusCode::BadIndexRangeNoData));
        assert_eq!(
            ranged(&speed, NumericRange::Index(0)).status,
            Some(StatusCode::BadIndexRangeInvalid),
            "a scalar has no elements"
        );
        assert_eq!(ranged(&array, NumericRange::Range(2, 1)).status, Some(StatusCode::BadIndexRangeInvalid));
        let name = ReadValueId { index_range: NumericRange::Index(0), ..item(&array, AttributeId::BrowseName) };
        assert_eq!(read_one(&space, UserRole::Anonymous, name).status, Some(StatusCode::BadIndexRangeInvalid));
    }

    #[test]
    fn timestamps_to_return_are_honoured() {
        let Machine { mut space, speed, .. } = machine();
        space.set_value_at(&speed, 1450.0, opcua_types::DateTime::ymd(2024, 1, 1)).unwrap();
        let with = |t| {
            let mut r = request(vec![item(&speed, AttributeId::Value)]);
            r.timestamps_to_return = t;
            space.read(&ctx(UserRole::Anonymous), &r).unwrap().results.unwrap().remove(0)
        };
        let both = with(TimestampsToReturn::Both);
        assert_eq!(both.source_timestamp, Some(opcua_types::DateTime::ymd(2024, 1, 1)));
        assert_eq!(both.server_timestamp, Some(ctx(UserRole::Anonymous).now.utc), "the server timestamp is the read's");
        let source = with(TimestampsToReturn::Source);
        assert!(source.source_timestamp.is_some() && source.server_timestamp.is_none());
        let server = with(TimestampsToReturn::Server);
        assert!(server.source_timestamp.is_none() && server.server_timestamp.is_some());
        let neither = with(TimestampsToReturn::Neither);
        assert!(neither.source_timestamp.is_none() && neither.server_timestamp.is_none());
        assert_eq!(neither.value, Some(Variant::Double(1450.0)));
    }

    #[test]
    fn reading_a_callback_variable_calls_the_callback() {
        let mut space = space();
        let ns = space.add_namespace(crate::server::address_space::tests::NS);
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let id = space
            .add_variable(
                VariableSpec::new(NodeId::new(ns, "Counter"), "Counter", ObjectId::ObjectsFolder)
                    .data_type(DataTypeId::UInt32)
                    .on_read(move |_| Ok(Variant::UInt32(counter.fetch_add(1, Ordering::SeqCst) as u32 + 100))),
            )
            .unwrap();
        assert_eq!(
            read_one(&space, UserRole::Anonymous, item(&id, AttributeId::Value)).value,
            Some(Variant::UInt32(100))
        );
        assert_eq!(
            read_one(&space, UserRole::Anonymous, item(&id, AttributeId::Value)).value,
            Some(Variant::UInt32(101))
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn sample_and_eu_range_serve_the_subscription_engine() {
        let Machine { space, speed, array, .. } = machine();
        assert_eq!(space.eu_range(&speed), Some((0.0, 3000.0)));
        assert_eq!(space.eu_range(&array), None);
        let value =
            space.sample(&ctx(UserRole::Anonymous), &item(&speed, AttributeId::Value), TimestampsToReturn::Neither);
        assert_eq!(value.value, Some(Variant::Double(1450.0)));
        let invalid =
            space.sample(&ctx(UserRole::Anonymous), &item(&speed, AttributeId::Value), TimestampsToReturn::Invalid);
        assert_eq!(invalid.status, Some(StatusCode::BadTimestampsToReturnInvalid));
    }
}
