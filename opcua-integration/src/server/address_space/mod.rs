//! The server's address space and the services that work on it: Read, Write, Browse/BrowseNext,
//! TranslateBrowsePathsToNodeIds, Call and RegisterNodes/UnregisterNodes.
//!
//! Sans-IO: plain data and functions. The time comes in [`RequestContext::now`], the caller's identity in
//! [`RequestContext::principal`]; nothing here opens a socket or reads a clock, except
//! [`SharedAddressSpace::set_value`], the application's convenience entry point, which stamps the value it is given.
//!
//! - [`AddressSpace`]: nodes by NodeId, references, the type tree and the namespace array; namespace 0 comes from
//!   `async-opcua-core-namespace` ([`AddressSpace::new`], module `ns0`), the application adds its own namespace with
//!   the builder API ([`AddressSpace::add_namespace`], [`VariableSpec`], [`ObjectSpec`], [`MethodSpec`]).
//! - [`SharedAddressSpace`]: a cloneable handle for the session layer and the application's tasks.
//! - Services, each `fn service(&self, ctx, &Request) -> Result<Response, StatusCode>`: `Err` is a service fault,
//!   `Ok` a full response whose per-operation results carry the operation-level status codes.
//!
//! Roles: anyone may read and browse; writing a variable needs its write role (default [`UserRole::Operator`]),
//! calling a method its call role (default Operator); changing attributes other than Value (where the WriteMask
//! allows it) needs [`UserRole::Administrator`].

mod browse;
mod builder;
mod call;
mod index_range;
mod ns0;
mod read;
mod register;
mod translate;
mod value_type;
mod write;

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use opcua_nodes::{DefaultTypeTree, NodeType, ReferenceDirection, References, TypeTree};
use opcua_types::{
    BrowseDirection, DataValue, DateTime, NodeClass, NodeId, QualifiedName, ReferenceTypeId, StatusCode, Variant,
};
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::access::{RequestContext, UserRole};
use crate::id_map::IdMap;

pub use browse::ContinuationPoints;
pub use builder::{FolderSpec, MethodSpec, ObjectSpec, VariableSpec};
pub use call::{MethodCall, PreparedCall};
pub use ns0::AddressSpaceLimits;

/// Produces a variable's value at read time (instead of a stored value). Runs while the address space is locked
/// for reading, so it must be quick and must not lock the same [`SharedAddressSpace`] for writing.
pub type ReadCallback = Arc<dyn Fn(&RequestContext) -> Result<Variant, StatusCode> + Send + Sync>;

/// Receives a value written by a client, already type-checked (and, for index-range writes, merged into the whole
/// value). An `Err` becomes the operation's status. Runs while the address space is locked for writing.
pub type WriteCallback = Arc<dyn Fn(&RequestContext, &Variant) -> Result<(), StatusCode> + Send + Sync>;

/// A method's implementation. It runs after the address space lock is released, so it may take its time and may
/// use the [`SharedAddressSpace`] itself.
pub type MethodHandler = Arc<dyn Fn(MethodCall) -> BoxFuture<'static, Result<Vec<Variant>, StatusCode>> + Send + Sync>;

/// A failure of the application-facing API (building the namespace, setting values).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AddressSpaceError {
    /// No node has this id.
    #[error("node {0} does not exist")]
    UnknownNode(NodeId),
    /// A node with this id exists already.
    #[error("node {0} already exists")]
    DuplicateNode(NodeId),
    /// The node id or browse name is null, or the node would reference itself.
    #[error("node {0} has a null id or browse name, or references itself")]
    InvalidNode(NodeId),
    /// The namespace index was never registered with [`AddressSpace::add_namespace`].
    #[error("namespace index {0} is not registered")]
    UnknownNamespace(u16),
    /// The operation needs a variable.
    #[error("node {0} is not a variable")]
    NotAVariable(NodeId),
    /// The value does not fit the variable's DataType or ValueRank.
    #[error("value does not match the data type or value rank of {0}")]
    TypeMismatch(NodeId),
}

impl AddressSpaceError {
    /// The OPC UA status code that names this failure.
    pub fn status_code(&self) -> StatusCode {
        match self {
            AddressSpaceError::UnknownNode(_) => StatusCode::BadNodeIdUnknown,
            AddressSpaceError::DuplicateNode(_) => StatusCode::BadNodeIdExists,
            AddressSpaceError::InvalidNode(_) => StatusCode::BadNodeIdInvalid,
            AddressSpaceError::UnknownNamespace(_) => StatusCode::BadNodeIdInvalid,
            AddressSpaceError::NotAVariable(_) => StatusCode::BadNodeClassInvalid,
            AddressSpaceError::TypeMismatch(_) => StatusCode::BadTypeMismatch,
        }
    }
}

/// What a variable does beyond its stored attributes.
#[derive(Clone, Default)]
pub(crate) struct VariableBehaviour {
    pub(crate) on_read: Option<ReadCallback>,
    pub(crate) on_write: Option<WriteCallback>,
    pub(crate) write_role: UserRole,
}

/// What a method does, and who may call it.
#[derive(Clone)]
pub(crate) struct MethodBehaviour {
    pub(crate) handler: MethodHandler,
    pub(crate) call_role: UserRole,
    pub(crate) inputs: Vec<opcua_types::Argument>,
    pub(crate) outputs: Vec<opcua_types::Argument>,
}

/// The default write and call role: operators change things, observers and anonymous callers look.
pub const DEFAULT_ROLE: UserRole = UserRole::Operator;

/// Nodes by NodeId, references, the type tree and the namespace array.
pub struct AddressSpace {
    nodes: IdMap<NodeId, NodeType>,
    references: References,
    type_tree: DefaultTypeTree,
    namespaces: Vec<String>,
    limits: AddressSpaceLimits,
    variables: IdMap<NodeId, VariableBehaviour>,
    methods: IdMap<NodeId, MethodBehaviour>,
}

impl fmt::Debug for AddressSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddressSpace")
            .field("nodes", &self.nodes.len())
            .field("namespaces", &self.namespaces)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn is_type_class(class: NodeClass) -> bool {
    matches!(class, NodeClass::DataType | NodeClass::ObjectType | NodeClass::VariableType | NodeClass::ReferenceType)
}

impl AddressSpace {
    /// An address space with nothing in it but the namespace array (namespace 0 and `local_uri` at index 1) and the
    /// type tree's roots. [`AddressSpace::new`] is what a server wants: this is the base it loads namespace 0 into.
    pub(crate) fn empty(local_uri: &str, limits: AddressSpaceLimits) -> Self {
        let mut type_tree = DefaultTypeTree::new();
        type_tree.namespaces_mut().add_namespace(local_uri);
        AddressSpace {
            nodes: IdMap::default(),
            references: References::new(),
            type_tree,
            namespaces: vec![ns0::NS0_URI.to_string(), local_uri.to_string()],
            limits,
            variables: IdMap::default(),
            methods: IdMap::default(),
        }
    }

    /// The node with this id.
    pub fn node(&self, id: &NodeId) -> Option<&NodeType> {
        self.nodes.get(id)
    }

    /// Whether a node has this id.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.nodes.contains_key(id)
    }

    /// How many nodes there are.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes at all.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// All references between nodes.
    pub fn references(&self) -> &References {
        &self.references
    }

    /// The type hierarchy (data, object, variable and reference types).
    pub fn type_tree(&self) -> &DefaultTypeTree {
        &self.type_tree
    }

    /// Whether `child` is `ancestor` or one of its subtypes.
    pub fn is_subtype_of(&self, child: &NodeId, ancestor: &NodeId) -> bool {
        self.type_tree.is_subtype_of(child, ancestor)
    }

    /// The namespace array: index 0 is OPC UA's own namespace, index 1 the server's ApplicationUri.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// The index of a namespace URI.
    pub fn namespace_index(&self, uri: &str) -> Option<u16> {
        self.namespaces.iter().position(|n| n == uri).and_then(|i| u16::try_from(i).ok())
    }

    /// The configured service limits.
    pub fn limits(&self) -> &AddressSpaceLimits {
        &self.limits
    }

    /// Inserts a node with references given as (other node, reference type, direction seen from the new node). A
    /// type node with an inverse HasSubtype reference joins the type tree.
    pub fn insert_node(
        &mut self,
        node: impl Into<NodeType>,
        references: &[(NodeId, NodeId, ReferenceDirection)],
    ) -> Result<(), AddressSpaceError> {
        let node: NodeType = node.into();
        let id = node.as_node().node_id().clone();
        if id.is_null() || node.as_node().browse_name().is_null() || references.iter().any(|(other, _, _)| *other == id)
        {
            return Err(AddressSpaceError::InvalidNode(id));
        }
        if usize::from(id.namespace) >= self.namespaces.len() {
            return Err(AddressSpaceError::UnknownNamespace(id.namespace));
        }
        if self.nodes.contains_key(&id) {
            return Err(AddressSpaceError::DuplicateNode(id));
        }
        let class = node.node_class();
        for (other, reference_type, direction) in references {
            match direction {
                ReferenceDirection::Forward => self.references.insert_reference(&id, other, reference_type),
                ReferenceDirection::Inverse => {
                    self.references.insert_reference(other, &id, reference_type);
                    if is_type_class(class) && *reference_type == ReferenceTypeId::HasSubtype {
                        self.type_tree.add_type_node(&id, other, class);
                    }
                }
            }
        }
        self.nodes.insert(id, node);
        Ok(())
    }

    /// Adds a reference between two existing nodes.
    pub fn add_reference(
        &mut self,
        source: &NodeId,
        target: &NodeId,
        reference_type: impl Into<NodeId>,
    ) -> Result<(), AddressSpaceError> {
        for id in [source, target] {
            if !self.nodes.contains_key(id) {
                return Err(AddressSpaceError::UnknownNode(id.clone()));
            }
        }
        if source == target {
            return Err(AddressSpaceError::InvalidNode(source.clone()));
        }
        self.references.insert_reference(source, target, reference_type);
        Ok(())
    }

    /// The stored value of a variable (not the result of a read callback, which needs a request).
    pub fn value(&self, id: &NodeId) -> Option<DataValue> {
        match self.nodes.get(id) {
            Some(NodeType::Variable(v)) => Some(v.value(
                opcua_types::TimestampsToReturn::Both,
                &opcua_types::NumericRange::None,
                &opcua_types::DataEncoding::Binary,
                0.0,
            )),
            _ => None,
        }
    }

    /// Stores a new value of a variable with good status, both timestamps `at`, after checking it against the
    /// variable's DataType (subtypes included) and ValueRank.
    pub fn set_value_at(
        &mut self,
        id: &NodeId,
        value: impl Into<Variant>,
        at: DateTime,
    ) -> Result<(), AddressSpaceError> {
        self.set_data_value(
            id,
            DataValue {
                value: Some(value.into()),
                status: Some(StatusCode::Good),
                source_timestamp: Some(at),
                source_picoseconds: None,
                server_timestamp: Some(at),
                server_picoseconds: None,
            },
        )
    }

    /// Stores a whole DataValue (value, status, timestamps) of a variable after the same checks as
    /// [`AddressSpace::set_value_at`].
    pub fn set_data_value(&mut self, id: &NodeId, value: DataValue) -> Result<(), AddressSpaceError> {
        let Some(NodeType::Variable(variable)) = self.nodes.get(id) else {
            return match self.nodes.contains_key(id) {
                true => Err(AddressSpaceError::NotAVariable(id.clone())),
                false => Err(AddressSpaceError::UnknownNode(id.clone())),
            };
        };
        if let Some(v) = &value.value {
            value_type::check(&self.type_tree, v, &variable.data_type(), variable.value_rank())
                .map_err(|_| AddressSpaceError::TypeMismatch(id.clone()))?;
        }
        if let Some(NodeType::Variable(variable)) = self.nodes.get_mut(id) {
            variable.set_data_value(value);
        }
        Ok(())
    }

    /// The type definition of an object or variable (its HasTypeDefinition target).
    pub fn type_definition(&self, id: &NodeId) -> Option<&NodeId> {
        self.references
            .find_references(
                id,
                Some((ReferenceTypeId::HasTypeDefinition, false)),
                &self.type_tree,
                BrowseDirection::Forward,
            )
            .next()
            .map(|r| r.target_node)
    }

    /// The target of a forward hierarchical reference from `parent` whose browse name is `name`.
    pub fn child(&self, parent: &NodeId, name: &QualifiedName) -> Option<&NodeId> {
        self.references
            .find_references(
                parent,
                Some((ReferenceTypeId::HierarchicalReferences, true)),
                &self.type_tree,
                BrowseDirection::Forward,
            )
            .map(|r| r.target_node)
            .find(|t| self.nodes.get(*t).is_some_and(|n| n.as_node().browse_name() == name))
    }

    /// The role a caller needs to write the variable's value.
    pub fn write_role(&self, id: &NodeId) -> UserRole {
        self.variables.get(id).map_or(DEFAULT_ROLE, |b| b.write_role)
    }

    fn has_forward_reference(&self, source: &NodeId, target: &NodeId, reference_type: ReferenceTypeId) -> bool {
        self.references
            .find_references(source, Some((reference_type, true)), &self.type_tree, BrowseDirection::Forward)
            .any(|r| r.target_node == target)
    }
}

/// A cloneable handle on an [`AddressSpace`] shared by the sessions and the application's tasks.
#[derive(Clone)]
pub struct SharedAddressSpace {
    inner: Arc<RwLock<AddressSpace>>,
}

impl fmt::Debug for SharedAddressSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedAddressSpace").finish_non_exhaustive()
    }
}

impl From<AddressSpace> for SharedAddressSpace {
    fn from(space: AddressSpace) -> Self {
        SharedAddressSpace::new(space)
    }
}

impl SharedAddressSpace {
    /// Shares `space`.
    pub fn new(space: AddressSpace) -> Self {
        SharedAddressSpace { inner: Arc::new(RwLock::new(space)) }
    }

    /// Locks for reading (many readers at once).
    pub fn read_guard(&self) -> RwLockReadGuard<'_, AddressSpace> {
        self.inner.read()
    }

    /// Locks for writing (building the namespace, Write).
    pub fn write_guard(&self) -> RwLockWriteGuard<'_, AddressSpace> {
        self.inner.write()
    }

    /// Updates a process value from the application, stamped with the system clock (the one place that reads it:
    /// this is the application's side, not the protocol core). Checked like [`AddressSpace::set_value_at`].
    pub fn set_value(&self, id: &NodeId, value: impl Into<Variant>) -> Result<(), AddressSpaceError> {
        self.inner.write().set_value_at(id, value, DateTime::now())
    }

    /// The stored value of a variable.
    pub fn value(&self, id: &NodeId) -> Option<DataValue> {
        self.inner.read().value(id)
    }

    /// Read service (see [`AddressSpace::read`]).
    pub fn read(
        &self,
        ctx: &RequestContext,
        request: &opcua_types::ReadRequest,
    ) -> Result<opcua_types::ReadResponse, StatusCode> {
        self.inner.read().read(ctx, request)
    }

    /// Read's results (see [`AddressSpace::read_items`]).
    pub fn read_items(
        &self,
        ctx: &RequestContext,
        max_age: f64,
        timestamps: opcua_types::TimestampsToReturn,
        items: &Option<Vec<opcua_types::ReadValueId>>,
    ) -> Result<Vec<DataValue>, StatusCode> {
        self.inner.read().read_items(ctx, max_age, timestamps, items)
    }

    /// One sample for the subscription engine (see [`AddressSpace::sample`]).
    pub fn sample(
        &self,
        ctx: &RequestContext,
        item: &opcua_types::ReadValueId,
        timestamps: opcua_types::TimestampsToReturn,
    ) -> DataValue {
        self.inner.read().sample(ctx, item, timestamps)
    }

    /// The EURange property of an analog item (see [`AddressSpace::eu_range`]).
    pub fn eu_range(&self, id: &NodeId) -> Option<(f64, f64)> {
        self.inner.read().eu_range(id)
    }

    /// Write service (see [`AddressSpace::write`]).
    pub fn write(
        &self,
        ctx: &RequestContext,
        request: &opcua_types::WriteRequest,
    ) -> Result<opcua_types::WriteResponse, StatusCode> {
        self.inner.write().write(ctx, request)
    }

    /// Browse service (see [`AddressSpace::browse`]).
    pub fn browse(
        &self,
        ctx: &RequestContext,
        request: &opcua_types::BrowseRequest,
        points: &mut ContinuationPoints,
    ) -> Result<opcua_types::BrowseResponse, StatusCode> {
        self.inner.read().browse(ctx, request, points)
    }

    /// BrowseNext service (see [`AddressSpace::browse_next`]).
    pub fn browse_next(
        &self,
        ctx: &RequestContext,
        request: &opcua_types::BrowseNextRequest,
        points: &mut ContinuationPoints,
    ) -> Result<opcua_types::BrowseNextResponse, StatusCode> {
        self.inner.read().browse_next(ctx, request, points)
    }

    /// TranslateBrowsePathsToNodeIds service (see [`AddressSpace::translate_browse_paths`]).
    pub fn translate_browse_paths(
        &self,
        ctx: &RequestContext,
        request: &opcua_types::TranslateBrowsePathsToNodeIdsRequest,
    ) -> Result<opcua_types::TranslateBrowsePathsToNodeIdsResponse, StatusCode> {
        self.inner.read().translate_browse_paths(ctx, request)
    }

    /// Call service: checks under the read lock, then runs the handlers with the lock released.
    pub async fn call(
        &self,
        ctx: &RequestContext,
        request: &opcua_types::CallRequest,
    ) -> Result<opcua_types::CallResponse, StatusCode> {
        let prepared = self.inner.read().prepare_call(ctx, request)?;
        Ok(prepared.run().await)
    }

    /// RegisterNodes service (see [`AddressSpace::register_nodes`]).
    pub fn register_nodes(
        &self,
        ctx: &RequestContext,
        request: &opcua_types::RegisterNodesRequest,
    ) -> Result<opcua_types::RegisterNodesResponse, StatusCode> {
        self.inner.read().register_nodes(ctx, request)
    }

    /// UnregisterNodes service (see [`AddressSpace::unregister_nodes`]).
    pub fn unregister_nodes(
        &self,
        ctx: &RequestContext,
        request: &opcua_types::UnregisterNodesRequest,
    ) -> Result<opcua_types::UnregisterNodesResponse, StatusCode> {
        self.inner.read().unregister_nodes(ctx, request)
    }
}

/// Checks shared by every service: an empty list is BadNothingToDo, a list over the limit BadTooManyOperations.
fn check_operation_count<T>(items: &Option<Vec<T>>, limit: usize) -> Result<&[T], StatusCode> {
    let items = items.as_deref().unwrap_or(&[]);
    if items.is_empty() {
        return Err(StatusCode::BadNothingToDo);
    }
    if items.len() > limit {
        return Err(StatusCode::BadTooManyOperations);
    }
    Ok(items)
}

#[cfg(test)]
pub(crate) mod tests;
