//! The API an application builds its namespace with.
//!
//! Every node gets the references a client expects: from its parent (Organizes below a folder, HasComponent below
//! an object, HasProperty for properties; the inverse side is what browsing up follows) and HasTypeDefinition for
//! objects and variables.
//!
//! ```
//! use certvault_opcua::server::access::UserRole;
//! use certvault_opcua::server::address_space::{
//!     AddressSpace, AddressSpaceLimits, MethodSpec, ObjectSpec, SharedAddressSpace, VariableSpec,
//! };
//! use certvault_opcua::server::ApplicationInfo;
//! use opcua_types::{Argument, DataTypeId, DateTime, NodeId, ObjectId, StatusCode, Variant};
//!
//! let app = ApplicationInfo {
//!     application_uri: "urn:example:server".into(),
//!     product_uri: "urn:example".into(),
//!     application_name: "Example".into(),
//! };
//! let mut space = AddressSpace::new(&app, AddressSpaceLimits::default(), DateTime::now());
//! let ns = space.add_namespace("urn:example:machine");
//! let machine = space.add_object(ObjectSpec::new(NodeId::new(ns, "Machine"), "Machine", ObjectId::ObjectsFolder))?;
//! let speed = space.add_variable(
//!     VariableSpec::new(NodeId::new(ns, "Machine.Speed"), "Speed", machine.clone())
//!         .data_type(DataTypeId::Double)
//!         .value(0.0)
//!         .writable()
//!         .eu_range(0.0, 3000.0),
//! )?;
//! space.add_variable(
//!     VariableSpec::new(NodeId::new(ns, "Machine.Uptime"), "Uptime", machine.clone())
//!         .data_type(DataTypeId::Double)
//!         .on_read(|ctx| Ok(Variant::Double(ctx.now.instant.elapsed().as_secs_f64()))),
//! )?;
//! let argument = Argument {
//!     name: "rpm".into(),
//!     data_type: DataTypeId::Double.into(),
//!     value_rank: -1,
//!     array_dimensions: None,
//!     description: "target speed".into(),
//! };
//! space.add_method(
//!     MethodSpec::new(NodeId::new(ns, "Machine.Start"), "Start", machine, |call| async move {
//!         match call.inputs.first() {
//!             Some(Variant::Double(rpm)) if *rpm >= 0.0 => Ok(vec![]),
//!             _ => Err(StatusCode::BadOutOfRange),
//!         }
//!     })
//!     .inputs(vec![argument])
//!     .call_role(UserRole::Administrator),
//! )?;
//!
//! // The application updates process values from any task through the shared handle.
//! let shared = SharedAddressSpace::new(space);
//! shared.set_value(&speed, 1450.0)?;
//! # Ok::<(), certvault_opcua::server::address_space::AddressSpaceError>(())
//! ```

use std::future::Future;
use std::sync::Arc;

use futures_util::FutureExt;
use opcua_nodes::{AccessLevel, Base, EventNotifier, Method, NodeBase, NodeType, Object, ReferenceDirection, Variable};
use opcua_types::{
    Argument, DataTypeId, DataValue, ExtensionObject, Identifier, LocalizedText, NodeClass, NodeId, ObjectTypeId,
    QualifiedName, Range, ReferenceTypeId, StatusCode, VariableTypeId, Variant,
};

use super::{
    value_type, AddressSpace, AddressSpaceError, MethodBehaviour, MethodCall, MethodHandler, ReadCallback,
    VariableBehaviour, WriteCallback, DEFAULT_ROLE,
};
use crate::server::access::{RequestContext, UserRole};

/// The id of a node's child named `name`: the parent's identifier, a dot and the name, in the parent's namespace.
fn child_id(parent: &NodeId, name: &str) -> NodeId {
    match &parent.identifier {
        Identifier::String(s) => NodeId::new(parent.namespace, format!("{}.{name}", s.as_ref())),
        other => NodeId::new(parent.namespace, format!("{other}.{name}")),
    }
}

/// Names and place shared by every kind of node.
#[derive(Clone, Debug)]
struct Common {
    id: NodeId,
    browse_name: QualifiedName,
    display_name: LocalizedText,
    description: Option<LocalizedText>,
    parent: NodeId,
    reference_type: Option<NodeId>,
}

impl Common {
    fn new(id: NodeId, name: &str, parent: NodeId) -> Self {
        Common {
            browse_name: QualifiedName::new(id.namespace, name),
            display_name: LocalizedText::from(name),
            description: None,
            parent,
            reference_type: None,
            id,
        }
    }

    fn base(&self, class: NodeClass) -> Base {
        let mut base = Base::new(class, &self.id, self.browse_name.clone(), self.display_name.clone());
        if let Some(description) = &self.description {
            base.set_description(description.clone());
        }
        base
    }
}

macro_rules! common_setters {
    () => {
        /// Sets the browse name (by default the name given, in the node id's namespace).
        pub fn browse_name(mut self, name: impl Into<QualifiedName>) -> Self {
            self.common.browse_name = name.into();
            self
        }

        /// Sets the display name (by default the name given).
        pub fn display_name(mut self, name: impl Into<LocalizedText>) -> Self {
            self.common.display_name = name.into();
            self
        }

        /// Sets the description.
        pub fn description(mut self, description: impl Into<LocalizedText>) -> Self {
            self.common.description = Some(description.into());
            self
        }

        /// Overrides the reference from the parent (by default Organizes below a folder, HasComponent below
        /// anything else, HasProperty for properties).
        pub fn reference_type(mut self, reference_type: impl Into<NodeId>) -> Self {
            self.common.reference_type = Some(reference_type.into());
            self
        }
    };
}

/// An object (or folder) to add with [`AddressSpace::add_object`].
#[derive(Clone, Debug)]
pub struct ObjectSpec {
    common: Common,
    type_definition: NodeId,
}

impl ObjectSpec {
    /// An object of BaseObjectType named `name` below `parent`.
    pub fn new(id: impl Into<NodeId>, name: &str, parent: impl Into<NodeId>) -> Self {
        ObjectSpec {
            common: Common::new(id.into(), name, parent.into()),
            type_definition: ObjectTypeId::BaseObjectType.into(),
        }
    }

    /// A folder (FolderType) named `name` below `parent`.
    pub fn folder(id: impl Into<NodeId>, name: &str, parent: impl Into<NodeId>) -> Self {
        ObjectSpec::new(id, name, parent).type_definition(ObjectTypeId::FolderType)
    }

    /// Sets the type definition.
    pub fn type_definition(mut self, type_definition: impl Into<NodeId>) -> Self {
        self.type_definition = type_definition.into();
        self
    }

    common_setters!();
}

/// A folder is an object of FolderType; this alias names the intent at call sites.
pub type FolderSpec = ObjectSpec;

/// A variable or property to add with [`AddressSpace::add_variable`].
#[derive(Clone)]
pub struct VariableSpec {
    common: Common,
    property: bool,
    type_definition: Option<NodeId>,
    data_type: Option<NodeId>,
    value_rank: Option<i32>,
    array_dimensions: Option<Vec<u32>>,
    value: Variant,
    writable: bool,
    write_role: UserRole,
    on_read: Option<ReadCallback>,
    on_write: Option<WriteCallback>,
    minimum_sampling_interval: Option<f64>,
    eu_range: Option<(f64, f64)>,
}

impl std::fmt::Debug for VariableSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VariableSpec").field("id", &self.common.id).field("value", &self.value).finish_non_exhaustive()
    }
}

impl VariableSpec {
    /// A variable (BaseDataVariableType) named `name` below `parent`: read-only, no value yet, its DataType taken
    /// from the value when not set.
    pub fn new(id: impl Into<NodeId>, name: &str, parent: impl Into<NodeId>) -> Self {
        VariableSpec {
            common: Common::new(id.into(), name, parent.into()),
            property: false,
            type_definition: None,
            data_type: None,
            value_rank: None,
            array_dimensions: None,
            value: Variant::Empty,
            writable: false,
            write_role: DEFAULT_ROLE,
            on_read: None,
            on_write: None,
            minimum_sampling_interval: None,
            eu_range: None,
        }
    }

    /// A property (PropertyType, referenced with HasProperty) named `name` of `parent`.
    pub fn property(id: impl Into<NodeId>, name: &str, parent: impl Into<NodeId>) -> Self {
        VariableSpec { property: true, ..VariableSpec::new(id, name, parent) }
    }

    /// Sets the DataType.
    pub fn data_type(mut self, data_type: impl Into<NodeId>) -> Self {
        self.data_type = Some(data_type.into());
        self
    }

    /// Sets the ValueRank (by default -1 for scalars, 1 for arrays).
    pub fn value_rank(mut self, value_rank: i32) -> Self {
        self.value_rank = Some(value_rank);
        self
    }

    /// Sets the ArrayDimensions.
    pub fn array_dimensions(mut self, dimensions: Vec<u32>) -> Self {
        self.array_dimensions = Some(dimensions);
        self
    }

    /// Sets the stored value.
    pub fn value(mut self, value: impl Into<Variant>) -> Self {
        self.value = value.into();
        self
    }

    /// Lets clients write the value (AccessLevel CurrentWrite), subject to the write role.
    pub fn writable(mut self) -> Self {
        self.writable = true;
        self
    }

    /// The least role that may write the value (default [`UserRole::Operator`]).
    pub fn write_role(mut self, role: UserRole) -> Self {
        self.write_role = role;
        self
    }

    /// Produces the value at each read instead of the stored value.
    pub fn on_read(
        mut self,
        f: impl Fn(&RequestContext) -> Result<Variant, StatusCode> + Send + Sync + 'static,
    ) -> Self {
        self.on_read = Some(Arc::new(f));
        self
    }

    /// Receives every value clients write (after the checks). The value is stored too unless the variable also
    /// has a read callback.
    pub fn on_write(
        mut self,
        f: impl Fn(&RequestContext, &Variant) -> Result<(), StatusCode> + Send + Sync + 'static,
    ) -> Self {
        self.on_write = Some(Arc::new(f));
        self.writable = true;
        self
    }

    /// Sets the type definition (default BaseDataVariableType, PropertyType for properties).
    pub fn type_definition(mut self, type_definition: impl Into<NodeId>) -> Self {
        self.type_definition = Some(type_definition.into());
        self
    }

    /// Sets MinimumSamplingInterval in milliseconds.
    pub fn minimum_sampling_interval(mut self, ms: f64) -> Self {
        self.minimum_sampling_interval = Some(ms);
        self
    }

    /// Adds an EURange property (the subscription engine's percent deadband needs it) and makes the variable an
    /// AnalogItemType unless a type definition was set.
    pub fn eu_range(mut self, low: f64, high: f64) -> Self {
        self.eu_range = Some((low, high));
        self
    }

    common_setters!();
}

/// A method to add with [`AddressSpace::add_method`].
#[derive(Clone)]
pub struct MethodSpec {
    common: Common,
    inputs: Vec<Argument>,
    outputs: Vec<Argument>,
    handler: MethodHandler,
    call_role: UserRole,
}

impl std::fmt::Debug for MethodSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MethodSpec").field("id", &self.common.id).field("inputs", &self.inputs).finish_non_exhaustive()
    }
}

impl MethodSpec {
    /// A method of `object` named `name` implemented by `handler`, without arguments so far.
    pub fn new<F, Fut>(id: impl Into<NodeId>, name: &str, object: impl Into<NodeId>, handler: F) -> Self
    where
        F: Fn(MethodCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Variant>, StatusCode>> + Send + 'static,
    {
        MethodSpec {
            common: Common::new(id.into(), name, object.into()),
            inputs: Vec::new(),
            outputs: Vec::new(),
            handler: Arc::new(move |call| handler(call).boxed()),
            call_role: DEFAULT_ROLE,
        }
    }

    /// The input arguments, published as the InputArguments property and checked on every call.
    pub fn inputs(mut self, arguments: Vec<Argument>) -> Self {
        self.inputs = arguments;
        self
    }

    /// The output arguments, published as the OutputArguments property.
    pub fn outputs(mut self, arguments: Vec<Argument>) -> Self {
        self.outputs = arguments;
        self
    }

    /// The least role that may call the method (default [`UserRole::Operator`]).
    pub fn call_role(mut self, role: UserRole) -> Self {
        self.call_role = role;
        self
    }

    common_setters!();
}

impl AddressSpace {
    /// Registers a namespace URI and returns its index; a URI registered before keeps its index. NamespaceArray
    /// follows.
    pub fn add_namespace(&mut self, uri: &str) -> u16 {
        if let Some(index) = self.namespace_index(uri) {
            return index;
        }
        self.namespaces.push(uri.to_string());
        self.type_tree.namespaces_mut().add_namespace(uri);
        let at = self.value(&opcua_types::VariableId::Server_NamespaceArray.into()).and_then(|v| v.server_timestamp);
        self.publish_namespace_array(at.unwrap_or_default());
        u16::try_from(self.namespaces.len().saturating_sub(1)).unwrap_or(u16::MAX)
    }

    /// The reference from `parent` to a new node when the caller did not choose one.
    fn default_parent_reference(&self, parent: &NodeId) -> NodeId {
        let in_folder =
            self.type_definition(parent).is_some_and(|t| self.is_subtype_of(t, &ObjectTypeId::FolderType.into()));
        if in_folder {
            ReferenceTypeId::Organizes.into()
        } else {
            ReferenceTypeId::HasComponent.into()
        }
    }

    fn check_target(&self, id: &NodeId) -> Result<(), AddressSpaceError> {
        match self.contains(id) {
            true => Ok(()),
            false => Err(AddressSpaceError::UnknownNode(id.clone())),
        }
    }

    /// Adds an object or folder.
    pub fn add_object(&mut self, spec: ObjectSpec) -> Result<NodeId, AddressSpaceError> {
        self.check_target(&spec.common.parent)?;
        self.check_target(&spec.type_definition)?;
        let reference =
            spec.common.reference_type.clone().unwrap_or_else(|| self.default_parent_reference(&spec.common.parent));
        let object = Object::new_full(spec.common.base(NodeClass::Object), EventNotifier::empty());
        let references = [
            (spec.common.parent.clone(), reference, ReferenceDirection::Inverse),
            (spec.type_definition.clone(), ReferenceTypeId::HasTypeDefinition.into(), ReferenceDirection::Forward),
        ];
        self.insert_node(object, &references)?;
        tracing::debug!(id = %spec.common.id, "object added");
        Ok(spec.common.id)
    }

    /// Adds a folder (an object of FolderType) named `name` below `parent`.
    pub fn add_folder(
        &mut self,
        id: impl Into<NodeId>,
        name: &str,
        parent: impl Into<NodeId>,
    ) -> Result<NodeId, AddressSpaceError> {
        self.add_object(ObjectSpec::folder(id, name, parent))
    }

    /// Adds a variable or property (and its EURange property when asked for).
    pub fn add_variable(&mut self, spec: VariableSpec) -> Result<NodeId, AddressSpaceError> {
        let id = spec.common.id.clone();
        self.check_target(&spec.common.parent)?;
        let data_type = match (&spec.data_type, spec.value.data_type()) {
            (Some(d), _) => d.clone(),
            (None, Some(d)) if d.namespace_uri.is_null() => d.node_id,
            _ => DataTypeId::BaseDataType.into(),
        };
        if !matches!(self.node(&data_type), Some(NodeType::DataType(_))) {
            return Err(AddressSpaceError::UnknownNode(data_type));
        }
        let value_rank = spec.value_rank.unwrap_or(match &spec.value {
            Variant::Array(a) => a.dimensions.as_ref().map_or(1, |d| i32::try_from(d.len()).unwrap_or(1)),
            _ => -1,
        });
        if !matches!(spec.value, Variant::Empty) {
            value_type::check(&self.type_tree, &spec.value, &data_type, value_rank)
                .map_err(|_| AddressSpaceError::TypeMismatch(id.clone()))?;
        }
        let type_definition = spec.type_definition.clone().unwrap_or_else(|| match (spec.property, spec.eu_range) {
            (true, _) => VariableTypeId::PropertyType.into(),
            (false, Some(_)) => VariableTypeId::AnalogItemType.into(),
            (false, None) => VariableTypeId::BaseDataVariableType.into(),
        });
        self.check_target(&type_definition)?;
        let reference = spec.common.reference_type.clone().unwrap_or_else(|| match spec.property {
            true => ReferenceTypeId::HasProperty.into(),
            false => self.default_parent_reference(&spec.common.parent),
        });
        let mut access = AccessLevel::CURRENT_READ;
        if spec.writable {
            access |= AccessLevel::CURRENT_WRITE;
        }
        let array_dimensions = spec.array_dimensions.clone().or_else(|| match (&spec.value, value_rank) {
            (Variant::Array(a), 1) => Some(vec![u32::try_from(a.values.len()).unwrap_or(0)]),
            _ => None,
        });
        let variable = Variable::new_full(
            spec.common.base(NodeClass::Variable),
            data_type,
            false,
            value_rank,
            DataValue { value: Some(spec.value.clone()), status: Some(StatusCode::Good), ..Default::default() },
            access.bits(),
            access.bits(),
            array_dimensions,
            spec.minimum_sampling_interval,
        );
        let references = [
            (spec.common.parent.clone(), reference, ReferenceDirection::Inverse),
            (type_definition, ReferenceTypeId::HasTypeDefinition.into(), ReferenceDirection::Forward),
        ];
        self.insert_node(variable, &references)?;
        self.variables.insert(
            id.clone(),
            VariableBehaviour { on_read: spec.on_read, on_write: spec.on_write, write_role: spec.write_role },
        );
        if let Some((low, high)) = spec.eu_range {
            self.add_variable(
                VariableSpec::property(child_id(&id, "EURange"), "EURange", id.clone())
                    .browse_name(QualifiedName::new(0, "EURange"))
                    .data_type(DataTypeId::Range)
                    .value(ExtensionObject::from_message(Range { low, high })),
            )?;
        }
        tracing::debug!(%id, "variable added");
        Ok(id)
    }

    /// Adds a method with its InputArguments/OutputArguments properties.
    pub fn add_method(&mut self, spec: MethodSpec) -> Result<NodeId, AddressSpaceError> {
        let id = spec.common.id.clone();
        self.check_target(&spec.common.parent)?;
        let reference = spec.common.reference_type.clone().unwrap_or_else(|| ReferenceTypeId::HasComponent.into());
        let method = Method::new_full(spec.common.base(NodeClass::Method), true, true);
        self.insert_node(method, &[(spec.common.parent.clone(), reference, ReferenceDirection::Inverse)])?;
        for (name, arguments) in [("InputArguments", &spec.inputs), ("OutputArguments", &spec.outputs)] {
            if arguments.is_empty() {
                continue;
            }
            let values: Vec<ExtensionObject> =
                arguments.iter().map(|a| ExtensionObject::from_message(a.clone())).collect();
            self.add_variable(
                VariableSpec::property(child_id(&id, name), name, id.clone())
                    .browse_name(QualifiedName::new(0, name))
                    .data_type(DataTypeId::Argument)
                    .value_rank(1)
                    .value(values),
            )?;
        }
        self.methods.insert(
            id.clone(),
            MethodBehaviour {
                handler: spec.handler,
                call_role: spec.call_role,
                inputs: spec.inputs,
                outputs: spec.outputs,
            },
        );
        tracing::debug!(%id, "method added");
        Ok(id)
    }
}

impl AddressSpace {
    /// Implements a method node that exists already (namespace 0's standard methods, such as ServerConfiguration's),
    /// checked against the arguments its own InputArguments/OutputArguments properties declare. Only `call_role`
    /// and higher may call it, and its UserExecutable attribute says so per caller.
    pub fn implement_method<F, Fut>(
        &mut self,
        id: &NodeId,
        call_role: UserRole,
        handler: F,
    ) -> Result<(), AddressSpaceError>
    where
        F: Fn(MethodCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Variant>, StatusCode>> + Send + 'static,
    {
        match self.node(id) {
            Some(NodeType::Method(_)) => {}
            Some(_) => return Err(AddressSpaceError::InvalidNode(id.clone())),
            None => return Err(AddressSpaceError::UnknownNode(id.clone())),
        }
        let arguments = |name: &str| -> Vec<Argument> {
            let Some(property) = self.child(id, &QualifiedName::new(0, name)).cloned() else { return Vec::new() };
            match self.value(&property).and_then(|v| v.value) {
                Some(Variant::Array(array)) => array
                    .values
                    .iter()
                    .filter_map(|v| match v {
                        Variant::ExtensionObject(e) => e.inner_as::<Argument>().cloned(),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            }
        };
        let (inputs, outputs) = (arguments("InputArguments"), arguments("OutputArguments"));
        let handler: MethodHandler = Arc::new(move |call| handler(call).boxed());
        self.methods.insert(id.clone(), MethodBehaviour { handler, call_role, inputs, outputs });
        tracing::debug!(%id, "standard method implemented");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use opcua_types::{BrowseDirection, ObjectId};

    use super::*;
    use crate::server::address_space::tests::{space, NS};

    fn refs(space: &AddressSpace, id: &NodeId, direction: BrowseDirection) -> Vec<(NodeId, NodeId)> {
        space
            .references()
            .find_references(id, None::<(NodeId, bool)>, space.type_tree(), direction)
            .map(|r| (r.reference_type.clone(), r.target_node.clone()))
            .collect()
    }

    #[test]
    fn nodes_get_parent_and_type_references() {
        let mut space = space();
        let ns = space.add_namespace(NS);
        let folder = space.add_folder(NodeId::new(ns, "F"), "F", ObjectId::ObjectsFolder).unwrap();
        let object = space.add_object(ObjectSpec::new(NodeId::new(ns, "O"), "O", folder.clone())).unwrap();
        let variable =
            space.add_variable(VariableSpec::new(NodeId::new(ns, "V"), "V", object.clone()).value(1i32)).unwrap();
        let property =
            space.add_variable(VariableSpec::property(NodeId::new(ns, "P"), "P", variable.clone()).value("x")).unwrap();

        let up = |id: &NodeId| refs(&space, id, BrowseDirection::Inverse);
        assert!(up(&folder).contains(&(ReferenceTypeId::Organizes.into(), ObjectId::ObjectsFolder.into())));
        assert!(
            up(&object).contains(&(ReferenceTypeId::Organizes.into(), folder.clone())),
            "objects in folders are organized"
        );
        assert!(up(&variable).contains(&(ReferenceTypeId::HasComponent.into(), object.clone())));
        assert!(up(&property).contains(&(ReferenceTypeId::HasProperty.into(), variable.clone())));
        assert_eq!(space.type_definition(&folder), Some(&ObjectTypeId::FolderType.into()));
        assert_eq!(space.type_definition(&object), Some(&ObjectTypeId::BaseObjectType.into()));
        assert_eq!(space.type_definition(&variable), Some(&VariableTypeId::BaseDataVariableType.into()));
        assert_eq!(space.type_definition(&property), Some(&VariableTypeId::PropertyType.into()));
        let Some(NodeType::Variable(v)) = space.node(&variable) else { panic!("not a variable") };
        assert_eq!(v.data_type(), NodeId::from(DataTypeId::Int32), "data type inferred from the value");
        assert_eq!(v.browse_name(), &QualifiedName::new(ns, "V"));
    }

    #[test]
    fn methods_publish_their_arguments() {
        let mut space = space();
        let ns = space.add_namespace(NS);
        let object = space.add_object(ObjectSpec::new(NodeId::new(ns, "O"), "O", ObjectId::ObjectsFolder)).unwrap();
        let argument =
            Argument { name: "x".into(), data_type: DataTypeId::Int32.into(), value_rank: -1, ..Default::default() };
        let method = space
            .add_method(
                MethodSpec::new(NodeId::new(ns, "M"), "M", object.clone(), |_| async { Ok(vec![]) })
                    .inputs(vec![argument]),
            )
            .unwrap();
        assert!(
            refs(&space, &method, BrowseDirection::Inverse).contains(&(ReferenceTypeId::HasComponent.into(), object))
        );
        let inputs = space.child(&method, &QualifiedName::new(0, "InputArguments")).expect("InputArguments").clone();
        assert!(space.child(&method, &QualifiedName::new(0, "OutputArguments")).is_none(), "no outputs, no property");
        let Some(Some(Variant::Array(array))) = space.value(&inputs).map(|v| v.value) else { panic!("no arguments") };
        assert_eq!(array.values.len(), 1);
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut space = space();
        let ns = space.add_namespace(NS);
        let parent: NodeId = ObjectId::ObjectsFolder.into();
        assert_eq!(
            space.add_variable(VariableSpec::new(NodeId::new(ns, "V"), "V", NodeId::new(ns, "nowhere"))),
            Err(AddressSpaceError::UnknownNode(NodeId::new(ns, "nowhere")))
        );
        assert_eq!(
            space.add_variable(
                VariableSpec::new(NodeId::new(ns, "V"), "V", parent.clone()).data_type(DataTypeId::Int32).value("text")
            ),
            Err(AddressSpaceError::TypeMismatch(NodeId::new(ns, "V")))
        );
        assert_eq!(
            space.add_object(ObjectSpec::new(NodeId::new(9, "O"), "O", parent.clone())),
            Err(AddressSpaceError::UnknownNamespace(9))
        );
        space.add_object(ObjectSpec::new(NodeId::new(ns, "O"), "O", parent.clone())).unwrap();
        let again = space.add_object(ObjectSpec::new(NodeId::new(ns, "O"), "O", parent.clone()));
        assert_eq!(again.map_err(|e| e.status_code()), Err(StatusCode::BadNodeIdExists));
        assert_eq!(
            space.add_object(ObjectSpec::new(NodeId::new(ns, "S"), "S", NodeId::new(ns, "S"))),
            Err(AddressSpaceError::UnknownNode(NodeId::new(ns, "S"))),
            "a node cannot be its own parent"
        );
    }
}
