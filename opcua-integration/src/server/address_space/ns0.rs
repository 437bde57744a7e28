//! Namespace 0 and the Server object's live values.
//!
//! The nodes come from `async-opcua-core-namespace` (the standard NodeSet2 compiled into Rust). The Server object's
//! variables that describe this server get values: ServerStatus (CurrentTime computed from the request's time),
//! NamespaceArray (kept in step with [`AddressSpace::add_namespace`]), ServerArray, ServiceLevel and the
//! ServerCapabilities with the OperationLimits this address space enforces.

use std::sync::Arc;

use opcua_core_namespace::CoreNamespace;
use opcua_nodes::{NodeSetImport, NodeType};
use opcua_types::{
    BrowseDirection, BuildInfo, DateTime, ExtensionObject, LocalizedText, NamespaceMap, NodeId, NodeSetNamespaceMapper,
    ReferenceTypeId, ServerState, ServerStatusDataType, UAString, VariableId, Variant,
};

use super::{is_type_class, AddressSpace, VariableBehaviour};
use crate::server::discovery::ApplicationInfo;

/// OPC UA's own namespace, index 0.
pub(crate) const NS0_URI: &str = "http://opcfoundation.org/UA/";

/// Limits the services enforce, published in Server.ServerCapabilities(.OperationLimits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressSpaceLimits {
    /// Most ReadValueIds in one Read.
    pub max_nodes_per_read: usize,
    /// Most WriteValues in one Write.
    pub max_nodes_per_write: usize,
    /// Most BrowseDescriptions in one Browse (and continuation points in one BrowseNext).
    pub max_nodes_per_browse: usize,
    /// Most BrowsePaths in one TranslateBrowsePathsToNodeIds.
    pub max_nodes_per_translate: usize,
    /// Most CallMethodRequests in one Call.
    pub max_nodes_per_call: usize,
    /// Most NodeIds in one RegisterNodes or UnregisterNodes.
    pub max_nodes_per_register: usize,
    /// Most references returned for one node per Browse or BrowseNext, whatever the client asks for.
    pub max_references_per_browse_node: usize,
    /// Most continuation points one session may hold at a time.
    pub max_browse_continuation_points: usize,
}

impl Default for AddressSpaceLimits {
    /// Generous for a machine's address space, small enough that one request cannot occupy the server for long.
    fn default() -> Self {
        AddressSpaceLimits {
            max_nodes_per_read: 1000,
            max_nodes_per_write: 1000,
            max_nodes_per_browse: 1000,
            max_nodes_per_translate: 1000,
            max_nodes_per_call: 100,
            max_nodes_per_register: 1000,
            max_references_per_browse_node: 1000,
            max_browse_continuation_points: 10,
        }
    }
}

fn u32_of(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn u16_of(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

impl AddressSpace {
    /// Namespace 0 plus this server's description: `application`'s ApplicationUri becomes namespace 1 and the
    /// ServerArray, its ProductUri and name the BuildInfo; `start_time` is ServerStatus.StartTime.
    pub fn new(application: &ApplicationInfo, limits: AddressSpaceLimits, start_time: DateTime) -> Self {
        let mut space = AddressSpace::empty(&application.application_uri, limits);
        space.import(&CoreNamespace);
        space.publish_server_object(application, start_time);
        space
    }

    /// Imports a generated node set. Nodes that exist already and self-references are skipped (with a warning)
    /// rather than trusted, so a faulty node set cannot panic the server.
    fn import(&mut self, import: &dyn NodeSetImport) {
        let mut map = NamespaceMap::new();
        let mut mapper = NodeSetNamespaceMapper::new(&mut map);
        import.register_namespaces(&mut mapper);
        let mut count = 0usize;
        for item in import.load(&mapper) {
            let id = item.node.as_node().node_id().clone();
            if self.nodes.contains_key(&id) {
                tracing::warn!(%id, "node set defines a node twice");
                continue;
            }
            for reference in item.references {
                if reference.target_id == id {
                    tracing::warn!(%id, "node set node references itself");
                    continue;
                }
                self.references.import_reference(id.clone(), reference);
            }
            self.nodes.insert(id, item.node);
            count += 1;
        }
        self.load_type_tree();
        tracing::debug!(count, "imported namespace 0");
    }

    /// Puts every type node with a supertype into the type tree; subtype checks (Browse, Write, Call) rely on it.
    fn load_type_tree(&mut self) {
        let types: Vec<(NodeId, NodeId, opcua_types::NodeClass)> = self
            .nodes
            .values()
            .filter(|n| is_type_class(n.node_class()))
            .filter_map(|n| {
                let id = n.as_node().node_id();
                let parent = self
                    .references
                    .find_references(
                        id,
                        Some((ReferenceTypeId::HasSubtype, false)),
                        &self.type_tree,
                        BrowseDirection::Inverse,
                    )
                    .next()?;
                Some((id.clone(), parent.target_node.clone(), n.node_class()))
            })
            .collect();
        for (id, parent, class) in types {
            self.type_tree.add_type_node(&id, &parent, class);
        }
    }

    fn publish_server_object(&mut self, application: &ApplicationInfo, start_time: DateTime) {
        let build_info = BuildInfo {
            product_uri: application.product_uri.as_str().into(),
            manufacturer_name: "certvault".into(),
            product_name: application.application_name.as_str().into(),
            software_version: env!("CARGO_PKG_VERSION").into(),
            build_number: env!("CARGO_PKG_VERSION").into(),
            // The build date is not known at run time without a build script; null says so honestly.
            build_date: DateTime::null(),
        };
        let limits = self.limits;
        let values: Vec<(VariableId, Variant)> = vec![
            (VariableId::Server_ServerArray, vec![UAString::from(application.application_uri.as_str())].into()),
            (VariableId::Server_ServiceLevel, Variant::Byte(255)),
            (VariableId::Server_ServerStatus_StartTime, start_time.into()),
            (VariableId::Server_ServerStatus_State, Variant::Int32(ServerState::Running as i32)),
            (VariableId::Server_ServerStatus_BuildInfo, ExtensionObject::from_message(build_info.clone()).into()),
            (VariableId::Server_ServerStatus_BuildInfo_ProductUri, build_info.product_uri.clone().into()),
            (VariableId::Server_ServerStatus_BuildInfo_ManufacturerName, build_info.manufacturer_name.clone().into()),
            (VariableId::Server_ServerStatus_BuildInfo_ProductName, build_info.product_name.clone().into()),
            (VariableId::Server_ServerStatus_BuildInfo_SoftwareVersion, build_info.software_version.clone().into()),
            (VariableId::Server_ServerStatus_BuildInfo_BuildNumber, build_info.build_number.clone().into()),
            (VariableId::Server_ServerStatus_BuildInfo_BuildDate, build_info.build_date.into()),
            (VariableId::Server_ServerStatus_SecondsTillShutdown, Variant::UInt32(0)),
            (VariableId::Server_ServerStatus_ShutdownReason, LocalizedText::null().into()),
            (
                VariableId::Server_ServerCapabilities_MaxBrowseContinuationPoints,
                Variant::UInt16(u16_of(limits.max_browse_continuation_points)),
            ),
            (
                VariableId::Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
                Variant::UInt32(u32_of(limits.max_nodes_per_read)),
            ),
            (
                VariableId::Server_ServerCapabilities_OperationLimits_MaxNodesPerWrite,
                Variant::UInt32(u32_of(limits.max_nodes_per_write)),
            ),
            (
                VariableId::Server_ServerCapabilities_OperationLimits_MaxNodesPerMethodCall,
                Variant::UInt32(u32_of(limits.max_nodes_per_call)),
            ),
            (
                VariableId::Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse,
                Variant::UInt32(u32_of(limits.max_nodes_per_browse)),
            ),
            (
                VariableId::Server_ServerCapabilities_OperationLimits_MaxNodesPerRegisterNodes,
                Variant::UInt32(u32_of(limits.max_nodes_per_register)),
            ),
            (
                VariableId::Server_ServerCapabilities_OperationLimits_MaxNodesPerTranslateBrowsePathsToNodeIds,
                Variant::UInt32(u32_of(limits.max_nodes_per_translate)),
            ),
        ];
        for (id, value) in values {
            self.store_ns0_value(&id.into(), value, start_time);
        }
        self.publish_namespace_array(start_time);

        // CurrentTime and the ServerStatus structure are computed per read so they follow the request's time.
        let current_time: super::ReadCallback = Arc::new(|ctx| Ok(ctx.now.utc.into()));
        self.variables.insert(
            VariableId::Server_ServerStatus_CurrentTime.into(),
            VariableBehaviour { on_read: Some(current_time), ..Default::default() },
        );
        let server_status: super::ReadCallback = Arc::new(move |ctx| {
            Ok(ExtensionObject::from_message(ServerStatusDataType {
                start_time,
                current_time: ctx.now.utc,
                state: ServerState::Running,
                build_info: build_info.clone(),
                seconds_till_shutdown: 0,
                shutdown_reason: LocalizedText::null(),
            })
            .into())
        });
        self.variables.insert(
            VariableId::Server_ServerStatus.into(),
            VariableBehaviour { on_read: Some(server_status), ..Default::default() },
        );
    }

    /// Writes NamespaceArray from the namespace list; called again whenever a namespace is added.
    pub(crate) fn publish_namespace_array(&mut self, at: DateTime) {
        let array: Vec<UAString> = self.namespaces.iter().map(|n| UAString::from(n.as_str())).collect();
        self.store_ns0_value(&VariableId::Server_NamespaceArray.into(), array.into(), at);
    }

    /// Stores a value without the type check: these are the standard's own variables and values of its types,
    /// and a missing node (a node set without it) only costs the value, not the server.
    fn store_ns0_value(&mut self, id: &NodeId, value: Variant, at: DateTime) {
        match self.nodes.get_mut(id) {
            Some(NodeType::Variable(variable)) => {
                let _ = variable.set_value_direct(value, opcua_types::StatusCode::Good, &at, &at);
            }
            _ => tracing::warn!(%id, "namespace 0 lacks a Server variable"),
        }
    }
}

#[cfg(test)]
mod tests {
    use opcua_types::{AttributeId, DataValue, ObjectId, ReadValueId, TimestampsToReturn};

    use super::*;
    use crate::server::access::UserRole;
    use crate::server::address_space::tests::{ctx_at, space};

    fn read_value(space: &AddressSpace, t: i64, id: impl Into<NodeId>) -> DataValue {
        let item = ReadValueId { node_id: id.into(), attribute_id: AttributeId::Value as u32, ..Default::default() };
        space.sample(&ctx_at(UserRole::Anonymous, t), &item, TimestampsToReturn::Both)
    }

    #[test]
    fn namespace_zero_is_loaded_with_its_type_tree() {
        let space = space();
        assert!(space.len() > 3000, "only {} nodes", space.len());
        assert!(space.contains(&ObjectId::Server.into()));
        assert!(
            space.is_subtype_of(&opcua_types::DataTypeId::UtcTime.into(), &opcua_types::DataTypeId::DateTime.into())
        );
        assert!(
            space.is_subtype_of(&ReferenceTypeId::Organizes.into(), &ReferenceTypeId::HierarchicalReferences.into())
        );
        assert!(!space.is_subtype_of(
            &ReferenceTypeId::HasTypeDefinition.into(),
            &ReferenceTypeId::HierarchicalReferences.into()
        ));
    }

    #[test]
    fn current_time_follows_the_request_time() {
        let space = space();
        let first = read_value(&space, 1_000, VariableId::Server_ServerStatus_CurrentTime);
        let later = read_value(&space, 5_000, VariableId::Server_ServerStatus_CurrentTime);
        let (Some(Variant::DateTime(a)), Some(Variant::DateTime(b))) = (first.value, later.value) else {
            panic!("CurrentTime is not a DateTime");
        };
        assert_eq!(b.ticks() - a.ticks(), 4_000 * 10_000, "CurrentTime advances with ctx.now");

        let status = read_value(&space, 5_000, VariableId::Server_ServerStatus);
        let Some(Variant::ExtensionObject(status)) = status.value else { panic!("ServerStatus is not a structure") };
        let status = status.inner_as::<ServerStatusDataType>().expect("ServerStatusDataType");
        assert_eq!(status.current_time, *b);
        assert_eq!(status.state, ServerState::Running);
        assert_eq!(status.build_info.product_uri.as_ref(), "urn:certvault:test:product");
        assert_eq!(status.start_time, crate::server::address_space::tests::start());
    }

    #[test]
    fn server_capabilities_reflect_the_limits() {
        let space = space();
        let limit = read_value(&space, 0, VariableId::Server_ServerCapabilities_OperationLimits_MaxNodesPerRead);
        assert_eq!(limit.value, Some(Variant::UInt32(7)));
        let cps = read_value(&space, 0, VariableId::Server_ServerCapabilities_MaxBrowseContinuationPoints);
        assert_eq!(cps.value, Some(Variant::UInt16(2)));
        let service_level = read_value(&space, 0, VariableId::Server_ServiceLevel);
        assert_eq!(service_level.value, Some(Variant::Byte(255)));
        let servers = read_value(&space, 0, VariableId::Server_ServerArray);
        assert_eq!(servers.value, Some(vec![UAString::from("urn:certvault:test:server")].into()));
    }

    #[test]
    fn namespace_array_contains_added_namespaces() {
        let mut space = space();
        let index = space.add_namespace("urn:certvault:test:machine");
        assert_eq!(index, 2);
        assert_eq!(space.add_namespace("urn:certvault:test:machine"), 2, "adding twice keeps the index");
        let array = read_value(&space, 0, VariableId::Server_NamespaceArray);
        let expected: Vec<UAString> =
            [NS0_URI, "urn:certvault:test:server", "urn:certvault:test:machine"].iter().map(|s| (*s).into()).collect();
        assert_eq!(array.value, Some(expected.into()));
    }
}
