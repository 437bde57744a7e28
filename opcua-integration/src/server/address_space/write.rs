//! The Write service.
//!
//! A variable's Value is written when its AccessLevel has CurrentWrite (else BadNotWritable) and the caller has
//! its write role (else BadUserAccessDenied), after a type check against its DataType, subtypes included
//! (BadTypeMismatch). A status or source timestamp in the written DataValue is accepted only when the AccessLevel
//! has StatusWrite or TimestampWrite, which the builder never sets: the server owns quality and time of its process
//! values, so by default such writes fail with BadWriteNotSupported. A server timestamp is never accepted. A Good
//! status is the same as none (many clients send it).
//!
//! Other attributes are writable only where the node's WriteMask allows (else BadNotWritable), and only by
//! administrators (else BadUserAccessDenied).

use opcua_nodes::{AccessLevel, NodeType};
use opcua_types::{
    AttributeId, DataValue, ResponseHeader, StatusCode, Variant, WriteMask, WriteRequest, WriteResponse, WriteValue,
};

use super::{check_operation_count, index_range, value_type, AddressSpace};
use crate::server::access::{RequestContext, UserRole};

fn mask_bit(attribute: AttributeId) -> Option<WriteMask> {
    Some(match attribute {
        AttributeId::BrowseName => WriteMask::BROWSE_NAME,
        AttributeId::DisplayName => WriteMask::DISPLAY_NAME,
        AttributeId::Description => WriteMask::DESCRIPTION,
        AttributeId::WriteMask => WriteMask::WRITE_MASK,
        AttributeId::UserWriteMask => WriteMask::USER_WRITE_MASK,
        AttributeId::IsAbstract => WriteMask::IS_ABSTRACT,
        AttributeId::Symmetric => WriteMask::SYMMETRIC,
        AttributeId::InverseName => WriteMask::INVERSE_NAME,
        AttributeId::ContainsNoLoops => WriteMask::CONTAINS_NO_LOOPS,
        AttributeId::EventNotifier => WriteMask::EVENT_NOTIFIER,
        AttributeId::Value => WriteMask::VALUE_FOR_VARIABLE_TYPE,
        AttributeId::DataType => WriteMask::DATA_TYPE,
        AttributeId::ValueRank => WriteMask::VALUE_RANK,
        AttributeId::ArrayDimensions => WriteMask::ARRAY_DIMENSIONS,
        AttributeId::AccessLevel => WriteMask::ACCESS_LEVEL,
        AttributeId::UserAccessLevel => WriteMask::USER_ACCESS_LEVEL,
        AttributeId::MinimumSamplingInterval => WriteMask::MINIMUM_SAMPLING_INTERVAL,
        AttributeId::Historizing => WriteMask::HISTORIZING,
        AttributeId::Executable => WriteMask::EXECUTABLE,
        AttributeId::UserExecutable => WriteMask::USER_EXECUTABLE,
        _ => return None,
    })
}

impl AddressSpace {
    /// Write service. Service faults: BadNothingToDo, BadTooManyOperations.
    pub fn write(&mut self, ctx: &RequestContext, request: &WriteRequest) -> Result<WriteResponse, StatusCode> {
        let items = check_operation_count(&request.nodes_to_write, self.limits.max_nodes_per_write)?;
        let mut results = Vec::with_capacity(items.len());
        for item in items {
            let status = match self.write_one(ctx, item) {
                Ok(()) => StatusCode::Good,
                Err(status) => {
                    tracing::debug!(node = %item.node_id, attribute = item.attribute_id, %status, "write refused");
                    status
                }
            };
            results.push(status);
        }
        Ok(WriteResponse {
            response_header: ResponseHeader::new_timestamped_service_result(
                ctx.now.utc,
                &request.request_header,
                StatusCode::Good,
            ),
            results: Some(results),
            diagnostic_infos: None,
        })
    }

    fn write_one(&mut self, ctx: &RequestContext, item: &WriteValue) -> Result<(), StatusCode> {
        let node = self.nodes.get(&item.node_id).ok_or(StatusCode::BadNodeIdUnknown)?;
        let attribute = AttributeId::from_u32(item.attribute_id).map_err(|_| StatusCode::BadAttributeIdInvalid)?;
        match (node, attribute) {
            (NodeType::Variable(_), AttributeId::Value) => self.write_value(ctx, item),
            _ => self.write_attribute(ctx, item, attribute),
        }
    }

    fn write_value(&mut self, ctx: &RequestContext, item: &WriteValue) -> Result<(), StatusCode> {
        let Some(NodeType::Variable(variable)) = self.nodes.get(&item.node_id) else {
            return Err(StatusCode::BadNodeIdUnknown);
        };
        let access = variable.access_level();
        if !access.contains(AccessLevel::CURRENT_WRITE) {
            return Err(StatusCode::BadNotWritable);
        }
        if !self.user_access_level(ctx, variable).contains(AccessLevel::CURRENT_WRITE) {
            return Err(StatusCode::BadUserAccessDenied);
        }
        let written = &item.value;
        let status = written.status.filter(|s| *s != StatusCode::Good);
        if (status.is_some() && !access.contains(AccessLevel::STATUS_WRITE))
            || (written.source_timestamp.is_some() && !access.contains(AccessLevel::TIMESTAMP_WRITE))
            || written.server_timestamp.is_some()
        {
            return Err(StatusCode::BadWriteNotSupported);
        }
        let data_type = variable.data_type();
        let new = written.value.clone().unwrap_or_default();
        let behaviour = self.variables.get(&item.node_id).cloned().unwrap_or_default();
        let value = if item.index_range.has_range() {
            // The part is checked for its element type first, so a wrong type is a type mismatch rather than a
            // range that does not fit.
            value_type::check(&self.type_tree, &new, &data_type, -2)?;
            let current = match &behaviour.on_read {
                Some(read) => read(ctx)?,
                None => variable
                    .value(
                        opcua_types::TimestampsToReturn::Neither,
                        &opcua_types::NumericRange::None,
                        &opcua_types::DataEncoding::Binary,
                        0.0,
                    )
                    .value
                    .unwrap_or_default(),
            };
            index_range::write(&current, &item.index_range, &new)?
        } else {
            new
        };
        value_type::check(&self.type_tree, &value, &data_type, variable.value_rank())?;
        if let Some(on_write) = &behaviour.on_write {
            on_write(ctx, &value)?;
        }
        if behaviour.on_read.is_none() {
            if let Some(NodeType::Variable(variable)) = self.nodes.get_mut(&item.node_id) {
                variable.set_data_value(DataValue {
                    value: Some(value),
                    status: Some(status.unwrap_or(StatusCode::Good)),
                    source_timestamp: Some(written.source_timestamp.unwrap_or(ctx.now.utc)),
                    source_picoseconds: written.source_timestamp.and(written.source_picoseconds),
                    server_timestamp: Some(ctx.now.utc),
                    server_picoseconds: None,
                });
            }
        }
        Ok(())
    }

    fn write_attribute(
        &mut self,
        ctx: &RequestContext,
        item: &WriteValue,
        attribute: AttributeId,
    ) -> Result<(), StatusCode> {
        let node = self.nodes.get_mut(&item.node_id).ok_or(StatusCode::BadNodeIdUnknown)?;
        let bit = mask_bit(attribute).ok_or(StatusCode::BadNotWritable)?;
        if !node.as_node().write_mask().is_some_and(|mask| mask.contains(bit)) {
            return Err(StatusCode::BadNotWritable);
        }
        if !ctx.principal.role.allows(UserRole::Administrator) {
            return Err(StatusCode::BadUserAccessDenied);
        }
        if item.index_range.has_range() {
            return Err(StatusCode::BadWriteNotSupported);
        }
        let value = item.value.value.clone().ok_or(StatusCode::BadTypeMismatch)?;
        if matches!(value, Variant::Empty) {
            return Err(StatusCode::BadTypeMismatch);
        }
        node.as_mut_node().set_attribute(attribute, value)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use opcua_types::{
        ByteString, DataTypeId, DateTime, LocalizedText, NodeId, NumericRange, ObjectId, UAString, VariableId,
    };

    use super::*;
    use crate::server::address_space::tests::{ctx, machine, Machine, NS};
    use crate::server::address_space::VariableSpec;

    fn value_of(id: &NodeId, value: impl Into<Variant>) -> WriteValue {
        WriteValue {
            node_id: id.clone(),
            attribute_id: AttributeId::Value as u32,
            value: DataValue { value: Some(value.into()), ..Default::default() },
            ..Default::default()
        }
    }

    fn write(space: &mut AddressSpace, role: UserRole, items: Vec<WriteValue>) -> Result<Vec<StatusCode>, StatusCode> {
        let request = WriteRequest { nodes_to_write: Some(items), ..Default::default() };
        space.write(&ctx(role), &request).map(|r| r.results.unwrap_or_default())
    }

    fn write_one(space: &mut AddressSpace, role: UserRole, item: WriteValue) -> StatusCode {
        write(space, role, vec![item]).expect("write").remove(0)
    }

    fn stored(space: &AddressSpace, id: &NodeId) -> Option<Variant> {
        space.value(id).and_then(|v| v.value)
    }

    #[test]
    fn service_faults() {
        let Machine { mut space, speed, .. } = machine();
        assert_eq!(write(&mut space, UserRole::Operator, vec![]), Err(StatusCode::BadNothingToDo));
        assert_eq!(
            write(&mut space, UserRole::Operator, vec![value_of(&speed, 1.0); 8]),
            Err(StatusCode::BadTooManyOperations)
        );
    }

    #[test]
    fn roles_decide_who_writes() {
        let Machine { mut space, speed, admin_only, .. } = machine();
        assert_eq!(write_one(&mut space, UserRole::Anonymous, value_of(&speed, 1.0)), StatusCode::BadUserAccessDenied);
        assert_eq!(write_one(&mut space, UserRole::Observer, value_of(&speed, 1.0)), StatusCode::BadUserAccessDenied);
        assert_eq!(stored(&space, &speed), Some(Variant::Double(1450.0)), "refused writes change nothing");
        assert_eq!(write_one(&mut space, UserRole::Operator, value_of(&speed, 2.0)), StatusCode::Good);
        assert_eq!(stored(&space, &speed), Some(Variant::Double(2.0)));
        assert_eq!(
            write_one(&mut space, UserRole::Operator, value_of(&admin_only, 9i32)),
            StatusCode::BadUserAccessDenied
        );
        assert_eq!(write_one(&mut space, UserRole::Administrator, value_of(&admin_only, 9i32)), StatusCode::Good);
        assert_eq!(stored(&space, &admin_only), Some(Variant::Int32(9)));
    }

    #[test]
    fn operation_level_status_codes() {
        let Machine { mut space, speed, secret, .. } = machine();
        let role = UserRole::Administrator;
        assert_eq!(write_one(&mut space, role, value_of(&NodeId::new(2, "none"), 1.0)), StatusCode::BadNodeIdUnknown);
        assert_eq!(write_one(&mut space, role, value_of(&secret, 1i32)), StatusCode::BadNotWritable);
        let status: NodeId = VariableId::Server_ServerStatus_State.into();
        assert_eq!(
            write_one(&mut space, role, value_of(&status, 1i32)),
            StatusCode::BadNotWritable,
            "namespace 0 is read-only"
        );
        let bogus = WriteValue { attribute_id: 99, ..value_of(&speed, 1.0) };
        assert_eq!(write_one(&mut space, role, bogus), StatusCode::BadAttributeIdInvalid);
        let name =
            WriteValue { attribute_id: AttributeId::DisplayName as u32, ..value_of(&speed, LocalizedText::from("x")) };
        assert_eq!(write_one(&mut space, role, name), StatusCode::BadNotWritable, "no WriteMask, no attribute writes");
    }

    #[test]
    fn the_write_mask_opens_attributes_to_administrators() {
        let Machine { mut space, speed, .. } = machine();
        if let Some(node) = space.nodes.get_mut(&speed) {
            node.as_mut_node().set_write_mask(WriteMask::DISPLAY_NAME);
        }
        let name = WriteValue {
            attribute_id: AttributeId::DisplayName as u32,
            ..value_of(&speed, LocalizedText::from("Spindle speed"))
        };
        assert_eq!(write_one(&mut space, UserRole::Operator, name.clone()), StatusCode::BadUserAccessDenied);
        assert_eq!(write_one(&mut space, UserRole::Administrator, name), StatusCode::Good);
        assert_eq!(space.node(&speed).map(|n| n.as_node().display_name().clone()), Some("Spindle speed".into()));
        let description =
            WriteValue { attribute_id: AttributeId::Description as u32, ..value_of(&speed, LocalizedText::from("x")) };
        assert_eq!(write_one(&mut space, UserRole::Administrator, description), StatusCode::BadNotWritable);
        let wrong_type = WriteValue { attribute_id: AttributeId::DisplayName as u32, ..value_of(&speed, 5i32) };
        assert_eq!(write_one(&mut space, UserRole::Administrator, wrong_type), StatusCode::BadTypeMismatch);
    }

    #[test]
    fn types_are_checked_with_subtypes() {
        let Machine { mut space, speed, timestamp, number, array, bytes, .. } = machine();
        let op = UserRole::Operator;
        assert_eq!(write_one(&mut space, op, value_of(&speed, 3i32)), StatusCode::BadTypeMismatch);
        assert_eq!(write_one(&mut space, op, value_of(&speed, "fast")), StatusCode::BadTypeMismatch);
        assert_eq!(
            write_one(&mut space, op, value_of(&speed, vec![1.0f64])),
            StatusCode::BadTypeMismatch,
            "scalar rank"
        );
        assert_eq!(write_one(&mut space, op, value_of(&speed, Variant::Empty)), StatusCode::BadTypeMismatch);
        // Number is abstract: any of its subtypes fits.
        assert_eq!(write_one(&mut space, op, value_of(&number, 2.5f64)), StatusCode::Good);
        assert_eq!(write_one(&mut space, op, value_of(&number, 7u16)), StatusCode::Good);
        assert_eq!(write_one(&mut space, op, value_of(&number, "7")), StatusCode::BadTypeMismatch);
        // UtcTime is a subtype of DateTime and travels as DateTime.
        assert_eq!(write_one(&mut space, op, value_of(&timestamp, DateTime::ymd(2025, 1, 1))), StatusCode::Good);
        assert_eq!(write_one(&mut space, op, value_of(&timestamp, 1.0)), StatusCode::BadTypeMismatch);
        assert_eq!(write_one(&mut space, op, value_of(&array, vec![1i32, 2])), StatusCode::Good);
        assert_eq!(write_one(&mut space, op, value_of(&array, vec![1.0f64])), StatusCode::BadTypeMismatch);
        assert_eq!(write_one(&mut space, op, value_of(&array, 1i32)), StatusCode::BadTypeMismatch, "array rank");
        assert_eq!(write_one(&mut space, op, value_of(&bytes, ByteString::from(vec![9u8]))), StatusCode::Good);
    }

    #[test]
    fn index_range_writes() {
        let Machine { mut space, array, text, .. } = machine();
        let op = UserRole::Operator;
        let ranged =
            |id: &NodeId, range: NumericRange, v: Variant| WriteValue { index_range: range, ..value_of(id, v) };
        assert_eq!(
            write_one(&mut space, op, ranged(&array, NumericRange::Range(1, 2), vec![21i32, 31].into())),
            StatusCode::Good
        );
        assert_eq!(stored(&space, &array), Some(Variant::from(vec![10i32, 21, 31, 40])));
        assert_eq!(
            write_one(&mut space, op, ranged(&array, NumericRange::Index(4), vec![1i32].into())),
            StatusCode::BadIndexRangeNoData
        );
        assert_eq!(
            write_one(&mut space, op, ranged(&array, NumericRange::Range(0, 1), vec![1i32].into())),
            StatusCode::BadIndexRangeDataMismatch
        );
        assert_eq!(
            write_one(&mut space, op, ranged(&array, NumericRange::Range(1, 0), vec![1i32].into())),
            StatusCode::BadIndexRangeInvalid
        );
        assert_eq!(
            write_one(&mut space, op, ranged(&array, NumericRange::Index(0), vec![1.5f64].into())),
            StatusCode::BadTypeMismatch
        );
        assert_eq!(
            write_one(&mut space, op, ranged(&text, NumericRange::Index(0), UAString::from("j").into())),
            StatusCode::Good
        );
        assert_eq!(stored(&space, &text), Some(Variant::from(UAString::from("jello"))));
    }

    #[test]
    fn status_and_timestamps_are_not_written() {
        let Machine { mut space, speed, .. } = machine();
        let op = UserRole::Operator;
        let mut with_status = value_of(&speed, 1.0);
        with_status.value.status = Some(StatusCode::UncertainLastUsableValue);
        assert_eq!(write_one(&mut space, op, with_status), StatusCode::BadWriteNotSupported);
        let mut with_source = value_of(&speed, 1.0);
        with_source.value.source_timestamp = Some(DateTime::ymd(2020, 1, 1));
        assert_eq!(write_one(&mut space, op, with_source), StatusCode::BadWriteNotSupported);
        let mut good = value_of(&speed, 1.0);
        good.value.status = Some(StatusCode::Good);
        assert_eq!(write_one(&mut space, op, good), StatusCode::Good, "an explicit Good status is no status");
        let stamp = space.value(&speed).and_then(|v| v.source_timestamp);
        assert_eq!(stamp, Some(ctx(op).now.utc), "the server stamps what it stores");
        // A variable that does accept them.
        if let Some(NodeType::Variable(v)) = space.nodes.get_mut(&speed) {
            v.set_access_level(v.access_level() | AccessLevel::STATUS_WRITE | AccessLevel::TIMESTAMP_WRITE);
            v.set_user_access_level(v.access_level());
        }
        let mut both = value_of(&speed, 3.0);
        both.value.status = Some(StatusCode::UncertainLastUsableValue);
        both.value.source_timestamp = Some(DateTime::ymd(2020, 1, 1));
        assert_eq!(write_one(&mut space, op, both), StatusCode::Good);
        let stored = space.value(&speed).unwrap();
        assert_eq!(stored.status, Some(StatusCode::UncertainLastUsableValue));
        assert_eq!(stored.source_timestamp, Some(DateTime::ymd(2020, 1, 1)));
    }

    #[test]
    fn write_callbacks_receive_the_value_and_can_refuse() {
        let Machine { mut space, machine, .. } = machine();
        let ns = space.add_namespace(NS);
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let setpoint = space
            .add_variable(
                VariableSpec::new(NodeId::new(ns, "Setpoint"), "Setpoint", machine)
                    .data_type(DataTypeId::Int32)
                    .value(0i32)
                    .on_write(move |_, v| match v {
                        Variant::Int32(n) if *n >= 0 => {
                            sink.lock().unwrap().push(*n);
                            Ok(())
                        }
                        _ => Err(StatusCode::BadOutOfRange),
                    }),
            )
            .unwrap();
        assert_eq!(write_one(&mut space, UserRole::Operator, value_of(&setpoint, 4i32)), StatusCode::Good);
        assert_eq!(write_one(&mut space, UserRole::Operator, value_of(&setpoint, -1i32)), StatusCode::BadOutOfRange);
        assert_eq!(*seen.lock().unwrap(), vec![4]);
        assert_eq!(stored(&space, &setpoint), Some(Variant::Int32(4)), "a refused write is not stored");
        let _ = ObjectId::ObjectsFolder;
    }
}
