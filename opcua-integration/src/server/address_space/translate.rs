//! TranslateBrowsePathsToNodeIds: follows relative paths of browse names from a starting node.

use std::collections::HashSet;

use opcua_nodes::TypeTree;
use opcua_types::{
    BrowseDirection, BrowsePath, BrowsePathResult, BrowsePathTarget, ExpandedNodeId, NodeId, ResponseHeader,
    StatusCode, TranslateBrowsePathsToNodeIdsRequest, TranslateBrowsePathsToNodeIdsResponse,
};

use super::{check_operation_count, AddressSpace};
use crate::server::access::RequestContext;

/// RemainingPathIndex of a target the whole path led to.
const WHOLE_PATH: u32 = u32::MAX;

impl AddressSpace {
    /// TranslateBrowsePathsToNodeIds service. Service faults: BadNothingToDo, BadTooManyOperations. Per path:
    /// BadNothingToDo (empty path), BadNodeIdUnknown (starting node), BadBrowseNameInvalid (a null target name),
    /// BadNoMatch. A null ReferenceTypeId in an element follows every reference.
    pub fn translate_browse_paths(
        &self,
        ctx: &RequestContext,
        request: &TranslateBrowsePathsToNodeIdsRequest,
    ) -> Result<TranslateBrowsePathsToNodeIdsResponse, StatusCode> {
        let paths = check_operation_count(&request.browse_paths, self.limits.max_nodes_per_translate)?;
        let results = paths
            .iter()
            .map(|path| match self.follow(path) {
                Ok(targets) => BrowsePathResult {
                    status_code: StatusCode::Good,
                    targets: Some(
                        targets
                            .into_iter()
                            .map(|id| BrowsePathTarget {
                                target_id: ExpandedNodeId::from(id),
                                remaining_path_index: WHOLE_PATH,
                            })
                            .collect(),
                    ),
                },
                Err(status) => BrowsePathResult { status_code: status, targets: None },
            })
            .collect();
        Ok(TranslateBrowsePathsToNodeIdsResponse {
            response_header: ResponseHeader::new_timestamped_service_result(
                ctx.now.utc,
                &request.request_header,
                StatusCode::Good,
            ),
            results: Some(results),
            diagnostic_infos: None,
        })
    }

    fn follow(&self, path: &BrowsePath) -> Result<Vec<NodeId>, StatusCode> {
        let elements = path.relative_path.elements.as_deref().unwrap_or(&[]);
        if elements.is_empty() {
            return Err(StatusCode::BadNothingToDo);
        }
        if !self.nodes.contains_key(&path.starting_node) {
            return Err(StatusCode::BadNodeIdUnknown);
        }
        if elements.iter().any(|e| e.target_name.name.is_empty()) {
            return Err(StatusCode::BadBrowseNameInvalid);
        }
        let mut current = vec![path.starting_node.clone()];
        for element in elements {
            let filter = (!element.reference_type_id.is_null())
                .then(|| (element.reference_type_id.clone(), element.include_subtypes));
            let direction = if element.is_inverse { BrowseDirection::Inverse } else { BrowseDirection::Forward };
            let mut seen = HashSet::new();
            let mut next = Vec::new();
            for node in &current {
                for reference in
                    self.references.find_references(node, filter.clone(), &self.type_tree as &dyn TypeTree, direction)
                {
                    let matches = self
                        .nodes
                        .get(reference.target_node)
                        .is_some_and(|t| *t.as_node().browse_name() == element.target_name);
                    if matches && seen.insert(reference.target_node.clone()) {
                        next.push(reference.target_node.clone());
                    }
                }
            }
            if next.is_empty() {
                return Err(StatusCode::BadNoMatch);
            }
            current = next;
        }
        Ok(current)
    }
}

#[cfg(test)]
mod tests {
    use opcua_types::{ObjectId, QualifiedName, ReferenceTypeId, RelativePath, RelativePathElement};

    use super::*;
    use crate::server::access::UserRole;
    use crate::server::address_space::tests::{ctx, machine, Machine};

    fn element(
        reference_type: impl Into<NodeId>,
        subtypes: bool,
        inverse: bool,
        name: QualifiedName,
    ) -> RelativePathElement {
        RelativePathElement {
            reference_type_id: reference_type.into(),
            is_inverse: inverse,
            include_subtypes: subtypes,
            target_name: name,
        }
    }

    fn translate(space: &AddressSpace, paths: Vec<BrowsePath>) -> Result<Vec<BrowsePathResult>, StatusCode> {
        let request = TranslateBrowsePathsToNodeIdsRequest { browse_paths: Some(paths), ..Default::default() };
        space.translate_browse_paths(&ctx(UserRole::Anonymous), &request).map(|r| r.results.unwrap_or_default())
    }

    fn path(start: impl Into<NodeId>, elements: Vec<RelativePathElement>) -> BrowsePath {
        BrowsePath { starting_node: start.into(), relative_path: RelativePath { elements: Some(elements) } }
    }

    fn only_target(result: &BrowsePathResult) -> Option<NodeId> {
        match result.targets.as_deref() {
            Some([target]) if target.remaining_path_index == WHOLE_PATH => Some(target.target_id.node_id.clone()),
            _ => None,
        }
    }

    #[test]
    fn follows_paths_with_subtypes_and_inverse_references() {
        let Machine { space, machine, speed, .. } = machine();
        let ns = machine.namespace;
        let down = path(
            ObjectId::RootFolder,
            vec![
                element(ReferenceTypeId::Organizes, false, false, QualifiedName::new(0, "Objects")),
                element(ReferenceTypeId::HierarchicalReferences, true, false, QualifiedName::new(ns, "Machine")),
                element(ReferenceTypeId::HasComponent, false, false, QualifiedName::new(ns, "Speed")),
                element(ReferenceTypeId::HasProperty, false, false, QualifiedName::new(0, "EURange")),
            ],
        );
        let up = path(
            speed.clone(),
            vec![element(ReferenceTypeId::HasComponent, false, true, QualifiedName::new(ns, "Machine"))],
        );
        let any_reference =
            path(machine.clone(), vec![element(NodeId::null(), false, false, QualifiedName::new(ns, "Speed"))]);
        let results = translate(&space, vec![down, up, any_reference]).unwrap();
        assert!(results.iter().all(|r| r.status_code == StatusCode::Good), "{results:?}");
        assert_eq!(only_target(&results[0]), space.child(&speed, &QualifiedName::new(0, "EURange")).cloned());
        assert_eq!(only_target(&results[1]), Some(machine.clone()));
        assert_eq!(only_target(&results[2]), Some(speed.clone()));
    }

    #[test]
    fn status_codes() {
        let Machine { space, machine, .. } = machine();
        let ns = machine.namespace;
        let name = QualifiedName::new(ns, "Speed");
        assert_eq!(translate(&space, vec![]).err(), Some(StatusCode::BadNothingToDo));
        let p = path(machine.clone(), vec![element(ReferenceTypeId::HasComponent, false, false, name.clone())]);
        assert_eq!(translate(&space, vec![p; 8]).err(), Some(StatusCode::BadTooManyOperations));
        let results = translate(
            &space,
            vec![
                path(machine.clone(), vec![]),
                path(
                    NodeId::new(ns, "missing"),
                    vec![element(ReferenceTypeId::HasComponent, false, false, name.clone())],
                ),
                path(
                    machine.clone(),
                    vec![element(ReferenceTypeId::HasComponent, false, false, QualifiedName::null())],
                ),
                path(
                    machine.clone(),
                    vec![element(ReferenceTypeId::HasComponent, false, false, QualifiedName::new(ns, "Nope"))],
                ),
                // Organizes is not how the Machine holds its variables, and HasChild without subtypes matches nothing.
                path(machine.clone(), vec![element(ReferenceTypeId::Organizes, true, false, name.clone())]),
                path(machine.clone(), vec![element(ReferenceTypeId::HasChild, false, false, name.clone())]),
                // Right name, wrong direction.
                path(machine.clone(), vec![element(ReferenceTypeId::HasComponent, false, true, name)]),
            ],
        )
        .unwrap();
        let codes: Vec<StatusCode> = results.iter().map(|r| r.status_code).collect();
        assert_eq!(
            codes,
            vec![
                StatusCode::BadNothingToDo,
                StatusCode::BadNodeIdUnknown,
                StatusCode::BadBrowseNameInvalid,
                StatusCode::BadNoMatch,
                StatusCode::BadNoMatch,
                StatusCode::BadNoMatch,
                StatusCode::BadNoMatch,
            ]
        );
    }
}
