//! Browse and BrowseNext, with the per-session continuation points the caller keeps.
//!
//! A continuation point holds the references still to be returned (computed once, at Browse), so BrowseNext does
//! not depend on the address space staying unchanged and costs no second walk.

use std::collections::HashMap;

use opcua_nodes::{NodeType, ReferenceDirection, TypeTree};
use opcua_types::{
    BrowseDescription, BrowseDirection, BrowseNextRequest, BrowseNextResponse, BrowseRequest, BrowseResponse,
    BrowseResult, ByteString, ExpandedNodeId, NodeClass, NodeId, ReferenceDescription, ResponseHeader, StatusCode,
};

use super::{check_operation_count, AddressSpace};
use crate::server::access::RequestContext;

/// BrowseResultMask bits (Part 4 §5.9.2).
mod result_mask {
    pub const REFERENCE_TYPE: u32 = 1;
    pub const IS_FORWARD: u32 = 2;
    pub const NODE_CLASS: u32 = 4;
    pub const BROWSE_NAME: u32 = 8;
    pub const DISPLAY_NAME: u32 = 16;
    pub const TYPE_DEFINITION: u32 = 32;
}

#[derive(Debug)]
struct Pending {
    references: Vec<ReferenceDescription>,
    max_per_call: usize,
}

/// One session's browse continuation points. The session owns it and passes it to Browse and BrowseNext; dropping
/// it (session close) releases them all. The limit per session is the address space's
/// [`max_browse_continuation_points`](super::AddressSpaceLimits::max_browse_continuation_points).
#[derive(Debug, Default)]
pub struct ContinuationPoints {
    next_id: u64,
    points: HashMap<Vec<u8>, Pending>,
}

impl ContinuationPoints {
    /// No continuation points yet.
    pub fn new() -> Self {
        ContinuationPoints::default()
    }

    /// How many continuation points are held.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Releases every continuation point.
    pub fn clear(&mut self) {
        self.points.clear();
    }

    fn store(&mut self, references: Vec<ReferenceDescription>, max_per_call: usize) -> ByteString {
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id.to_be_bytes().to_vec();
        self.points.insert(id.clone(), Pending { references, max_per_call });
        ByteString::from(id)
    }
}

/// Splits off the first `max` references; the rest go to a continuation point, or, when the session has no point
/// left, the node's result is BadNoContinuationPoints.
fn page(
    mut references: Vec<ReferenceDescription>,
    max: usize,
    points: &mut ContinuationPoints,
    limit: usize,
) -> BrowseResult {
    if references.len() <= max {
        return BrowseResult {
            status_code: StatusCode::Good,
            continuation_point: ByteString::null(),
            references: Some(references),
        };
    }
    if points.len() >= limit {
        return BrowseResult {
            status_code: StatusCode::BadNoContinuationPoints,
            continuation_point: ByteString::null(),
            references: None,
        };
    }
    let rest = references.split_off(max);
    BrowseResult {
        status_code: StatusCode::Good,
        continuation_point: points.store(rest, max),
        references: Some(references),
    }
}

impl AddressSpace {
    /// Browse service. Service faults: BadNothingToDo, BadTooManyOperations, BadViewIdUnknown (only the default
    /// view, a null ViewId, is supported). References per node are capped at the smaller of the client's
    /// requestedMaxReferencesPerNode (0: no limit of its own) and the server's limit.
    pub fn browse(
        &self,
        ctx: &RequestContext,
        request: &BrowseRequest,
        points: &mut ContinuationPoints,
    ) -> Result<BrowseResponse, StatusCode> {
        let items = check_operation_count(&request.nodes_to_browse, self.limits.max_nodes_per_browse)?;
        if !request.view.view_id.is_null() {
            return Err(StatusCode::BadViewIdUnknown);
        }
        let cap = self.limits.max_references_per_browse_node.max(1);
        let max = match usize::try_from(request.requested_max_references_per_node) {
            Ok(0) | Err(_) => cap,
            Ok(n) => n.min(cap),
        };
        let results = items
            .iter()
            .map(|description| match self.references_of(description) {
                Ok(references) => page(references, max, points, self.limits.max_browse_continuation_points),
                Err(status) => {
                    BrowseResult { status_code: status, continuation_point: ByteString::null(), references: None }
                }
            })
            .collect();
        Ok(BrowseResponse {
            response_header: ResponseHeader::new_timestamped_service_result(
                ctx.now.utc,
                &request.request_header,
                StatusCode::Good,
            ),
            results: Some(results),
            diagnostic_infos: None,
        })
    }

    /// BrowseNext service. Service faults: BadNothingToDo, BadTooManyOperations. An unknown (or already used up
    /// or released) continuation point is BadContinuationPointInvalid.
    pub fn browse_next(
        &self,
        ctx: &RequestContext,
        request: &BrowseNextRequest,
        points: &mut ContinuationPoints,
    ) -> Result<BrowseNextResponse, StatusCode> {
        let items = check_operation_count(&request.continuation_points, self.limits.max_nodes_per_browse)?;
        let results = items
            .iter()
            .map(|point| {
                let key = point.value.clone().unwrap_or_default();
                let invalid = || BrowseResult {
                    status_code: StatusCode::BadContinuationPointInvalid,
                    continuation_point: ByteString::null(),
                    references: None,
                };
                if request.release_continuation_points {
                    return match points.points.remove(&key) {
                        Some(_) => BrowseResult {
                            status_code: StatusCode::Good,
                            continuation_point: ByteString::null(),
                            references: None,
                        },
                        None => invalid(),
                    };
                }
                let Some(pending) = points.points.get_mut(&key) else { return invalid() };
                let take = pending.max_per_call.min(pending.references.len());
                let references: Vec<_> = pending.references.drain(..take).collect();
                let continuation_point = if pending.references.is_empty() {
                    points.points.remove(&key);
                    ByteString::null()
                } else {
                    point.clone()
                };
                BrowseResult { status_code: StatusCode::Good, continuation_point, references: Some(references) }
            })
            .collect();
        Ok(BrowseNextResponse {
            response_header: ResponseHeader::new_timestamped_service_result(
                ctx.now.utc,
                &request.request_header,
                StatusCode::Good,
            ),
            results: Some(results),
            diagnostic_infos: None,
        })
    }

    /// Every reference of one BrowseDescription, filtered and described per its masks.
    fn references_of(&self, description: &BrowseDescription) -> Result<Vec<ReferenceDescription>, StatusCode> {
        if !self.nodes.contains_key(&description.node_id) {
            return Err(StatusCode::BadNodeIdUnknown);
        }
        if description.browse_direction == BrowseDirection::Invalid {
            return Err(StatusCode::BadBrowseDirectionInvalid);
        }
        let filter = if description.reference_type_id.is_null() {
            None
        } else {
            if !matches!(self.nodes.get(&description.reference_type_id), Some(NodeType::ReferenceType(_))) {
                return Err(StatusCode::BadReferenceTypeIdInvalid);
            }
            Some((description.reference_type_id.clone(), description.include_subtypes))
        };
        let mask = description.result_mask;
        let mut references = Vec::new();
        for reference in self.references.find_references(
            &description.node_id,
            filter,
            &self.type_tree as &dyn TypeTree,
            description.browse_direction,
        ) {
            let target = self.nodes.get(reference.target_node);
            let class = target.map_or(NodeClass::Unspecified, |t| t.node_class());
            if description.node_class_mask != 0 && description.node_class_mask & (class as u32) == 0 {
                continue;
            }
            let wanted = |bit: u32| mask & bit != 0;
            let type_definition = match (wanted(result_mask::TYPE_DEFINITION), class) {
                (true, NodeClass::Object | NodeClass::Variable) => self
                    .type_definition(reference.target_node)
                    .map_or_else(ExpandedNodeId::null, |t| ExpandedNodeId::from(t.clone())),
                _ => ExpandedNodeId::null(),
            };
            references.push(ReferenceDescription {
                reference_type_id: match wanted(result_mask::REFERENCE_TYPE) {
                    true => reference.reference_type.clone(),
                    false => NodeId::null(),
                },
                is_forward: wanted(result_mask::IS_FORWARD) && reference.direction == ReferenceDirection::Forward,
                node_id: ExpandedNodeId::from(reference.target_node.clone()),
                browse_name: match (wanted(result_mask::BROWSE_NAME), target) {
                    (true, Some(t)) => t.as_node().browse_name().clone(),
                    _ => Default::default(),
                },
                display_name: match (wanted(result_mask::DISPLAY_NAME), target) {
                    (true, Some(t)) => t.as_node().display_name().clone(),
                    _ => Default::default(),
                },
                node_class: match wanted(result_mask::NODE_CLASS) {
                    true => class,
                    false => NodeClass::Unspecified,
                },
                type_definition,
            });
        }
        Ok(references)
    }
}

#[cfg(test)]
mod tests {
    use opcua_types::{ObjectId, QualifiedName, ReferenceTypeId, ViewDescription};

    use super::*;
    use crate::server::access::UserRole;
    use crate::server::address_space::tests::{ctx, machine, Machine};

    fn describe(node: &NodeId) -> BrowseDescription {
        BrowseDescription {
            node_id: node.clone(),
            browse_direction: BrowseDirection::Forward,
            reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
            include_subtypes: true,
            node_class_mask: 0,
            result_mask: 63,
        }
    }

    fn browse(
        space: &AddressSpace,
        points: &mut ContinuationPoints,
        max: u32,
        items: Vec<BrowseDescription>,
    ) -> Result<Vec<BrowseResult>, StatusCode> {
        let request = BrowseRequest {
            requested_max_references_per_node: max,
            nodes_to_browse: Some(items),
            ..Default::default()
        };
        space.browse(&ctx(UserRole::Anonymous), &request, points).map(|r| r.results.unwrap_or_default())
    }

    fn next(
        space: &AddressSpace,
        points: &mut ContinuationPoints,
        release: bool,
        cps: Vec<ByteString>,
    ) -> Vec<BrowseResult> {
        let request = BrowseNextRequest {
            release_continuation_points: release,
            continuation_points: Some(cps),
            ..Default::default()
        };
        space.browse_next(&ctx(UserRole::Anonymous), &request, points).unwrap().results.unwrap_or_default()
    }

    fn names(result: &BrowseResult) -> Vec<String> {
        let mut names: Vec<String> =
            result.references.iter().flatten().map(|r| r.browse_name.name.as_ref().to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn browses_children_with_all_fields() {
        let Machine { space, machine, speed, .. } = machine();
        let mut points = ContinuationPoints::new();
        let result = browse(&space, &mut points, 0, vec![describe(&machine)]).unwrap().remove(0);
        assert_eq!(result.status_code, StatusCode::Good);
        // 10 children, more than the server's cap of 5: the rest waits behind a continuation point.
        assert_eq!(result.references.as_ref().map(Vec::len), Some(5));
        assert!(!result.continuation_point.is_null());
        let speed_ref = browse(
            &space,
            &mut ContinuationPoints::new(),
            0,
            vec![BrowseDescription { node_class_mask: NodeClass::Variable as u32, ..describe(&speed) }],
        );
        let property = speed_ref.unwrap().remove(0).references.unwrap().remove(0);
        assert_eq!(property.browse_name, QualifiedName::new(0, "EURange"));
        assert_eq!(property.reference_type_id, NodeId::from(ReferenceTypeId::HasProperty));
        assert!(property.is_forward);
        assert_eq!(property.node_class, NodeClass::Variable);
        assert_eq!(
            property.type_definition,
            ExpandedNodeId::from(NodeId::from(opcua_types::VariableTypeId::PropertyType))
        );
    }

    #[test]
    fn continuation_points_carry_across_browse_next() {
        let Machine { space, machine, .. } = machine();
        let mut points = ContinuationPoints::new();
        let first = browse(&space, &mut points, 4, vec![describe(&machine)]).unwrap().remove(0);
        assert_eq!(first.references.as_ref().map(Vec::len), Some(4), "the client's smaller limit wins");
        assert_eq!(points.len(), 1);
        let second = next(&space, &mut points, false, vec![first.continuation_point.clone()]).remove(0);
        assert_eq!(second.status_code, StatusCode::Good);
        assert_eq!(second.references.as_ref().map(Vec::len), Some(4));
        assert!(!second.continuation_point.is_null());
        let third = next(&space, &mut points, false, vec![second.continuation_point.clone()]).remove(0);
        assert_eq!(third.references.as_ref().map(Vec::len), Some(2));
        assert!(third.continuation_point.is_null(), "the last page ends the point");
        assert!(points.is_empty());
        let mut all = [names(&first), names(&second), names(&third)].concat();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 10, "every child exactly once: {all:?}");
        let used = next(&space, &mut points, false, vec![third.continuation_point.clone(), first.continuation_point]);
        assert!(used.iter().all(|r| r.status_code == StatusCode::BadContinuationPointInvalid));
    }

    #[test]
    fn releasing_and_exhausting_continuation_points() {
        let Machine { space, machine, .. } = machine();
        let mut points = ContinuationPoints::new();
        let results = browse(&space, &mut points, 1, vec![describe(&machine); 3]).unwrap();
        assert_eq!(results[0].status_code, StatusCode::Good);
        assert_eq!(results[1].status_code, StatusCode::Good);
        assert_eq!(results[2].status_code, StatusCode::BadNoContinuationPoints, "the session may hold two");
        assert_eq!(results[2].references, None);
        let released = next(&space, &mut points, true, vec![results[0].continuation_point.clone()]).remove(0);
        assert_eq!(released.status_code, StatusCode::Good);
        assert_eq!(released.references, None);
        assert_eq!(points.len(), 1);
        let again = next(&space, &mut points, false, vec![results[0].continuation_point.clone()]).remove(0);
        assert_eq!(again.status_code, StatusCode::BadContinuationPointInvalid);
        let request = BrowseNextRequest { continuation_points: Some(vec![]), ..Default::default() };
        assert_eq!(
            space.browse_next(&ctx(UserRole::Anonymous), &request, &mut points).err(),
            Some(StatusCode::BadNothingToDo)
        );
    }

    #[test]
    fn filters_direction_reference_type_and_node_class() {
        let Machine { space, machine, start, .. } = machine();
        let mut points = ContinuationPoints::new();
        let up = browse(
            &space,
            &mut points,
            0,
            vec![BrowseDescription { browse_direction: BrowseDirection::Inverse, ..describe(&machine) }],
        )
        .unwrap()
        .remove(0);
        let parent = up.references.unwrap().remove(0);
        assert_eq!(parent.node_id, ExpandedNodeId::from(NodeId::from(ObjectId::ObjectsFolder)));
        assert!(!parent.is_forward);
        let methods = browse(
            &space,
            &mut points,
            0,
            vec![BrowseDescription { node_class_mask: NodeClass::Method as u32, ..describe(&machine) }],
        )
        .unwrap()
        .remove(0);
        assert_eq!(names(&methods), vec!["Reset", "Start"]);
        // HasProperty exactly: the method's argument properties.
        let exact = BrowseDescription {
            reference_type_id: ReferenceTypeId::HasProperty.into(),
            include_subtypes: false,
            ..describe(&start)
        };
        assert_eq!(
            names(&browse(&space, &mut points, 0, vec![exact]).unwrap()[0]),
            vec!["InputArguments", "OutputArguments"]
        );
        let not_subtype = BrowseDescription {
            reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
            include_subtypes: false,
            ..describe(&machine)
        };
        assert!(browse(&space, &mut points, 0, vec![not_subtype]).unwrap()[0]
            .references
            .as_ref()
            .is_some_and(Vec::is_empty));
        let type_definition = BrowseDescription {
            reference_type_id: NodeId::null(),
            node_class_mask: NodeClass::ObjectType as u32,
            ..describe(&machine)
        };
        let type_refs = browse(&space, &mut points, 0, vec![type_definition]).unwrap().remove(0);
        assert_eq!(
            names(&type_refs),
            vec!["BaseObjectType"],
            "a null reference type follows non-hierarchical ones too"
        );
        let both = BrowseDescription { browse_direction: BrowseDirection::Both, ..describe(&start) };
        let all = browse(&space, &mut points, 0, vec![both]).unwrap().remove(0);
        assert_eq!(all.references.iter().flatten().filter(|r| r.is_forward).count(), 2);
        assert_eq!(all.references.iter().flatten().filter(|r| !r.is_forward).count(), 1);
        let only_names = BrowseDescription { result_mask: result_mask::BROWSE_NAME, ..describe(&start) };
        let described =
            browse(&space, &mut points, 0, vec![only_names]).unwrap().remove(0).references.unwrap().remove(0);
        assert!(described.reference_type_id.is_null() && described.display_name.text.is_null());
        assert_eq!(described.node_class, NodeClass::Unspecified);
    }

    #[test]
    fn status_codes() {
        let Machine { space, machine, .. } = machine();
        let mut points = ContinuationPoints::new();
        assert_eq!(browse(&space, &mut points, 0, vec![]).err(), Some(StatusCode::BadNothingToDo));
        assert_eq!(
            browse(&space, &mut points, 0, vec![describe(&machine); 8]).err(),
            Some(StatusCode::BadTooManyOperations)
        );
        let request = BrowseRequest {
            view: ViewDescription { view_id: NodeId::new(0, 12345u32), ..Default::default() },
            nodes_to_browse: Some(vec![describe(&machine)]),
            ..Default::default()
        };
        assert_eq!(
            space.browse(&ctx(UserRole::Anonymous), &request, &mut points).err(),
            Some(StatusCode::BadViewIdUnknown)
        );
        let results = browse(
            &space,
            &mut points,
            0,
            vec![
                describe(&NodeId::new(2, "nothing")),
                BrowseDescription { browse_direction: BrowseDirection::Invalid, ..describe(&machine) },
                BrowseDescription { reference_type_id: machine.clone(), ..describe(&machine) },
            ],
        )
        .unwrap();
        let codes: Vec<StatusCode> = results.iter().map(|r| r.status_code).collect();
        assert_eq!(
            codes,
            vec![
                StatusCode::BadNodeIdUnknown,
                StatusCode::BadBrowseDirectionInvalid,
                StatusCode::BadReferenceTypeIdInvalid
            ]
        );
    }
}
