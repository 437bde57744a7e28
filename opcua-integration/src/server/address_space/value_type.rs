//! Whether a value fits a DataType and ValueRank (Write, Call arguments, application updates).

use opcua_nodes::{DefaultTypeTree, TypeTree};
use opcua_types::{DataTypeId, NodeId, StatusCode, Variant, VariantScalarTypeId};

/// The highest built-in DataType id (DiagnosticInfo); ids up to it are the types a Variant can carry directly.
const LAST_BUILT_IN: u32 = 25;

/// The DataType a scalar variant carries, or `None` when it cannot say (a null or unresolved ExtensionObject).
fn scalar_data_type(value: &Variant) -> Option<NodeId> {
    match value {
        Variant::ExtensionObject(object) => {
            let id = object.data_type()?;
            // Types of other namespaces need the server's namespace table; ours are all in namespace 0.
            (id.namespace_uri.is_null() && id.server_index == 0).then_some(id.node_id)
        }
        Variant::Variant(_) => Some(DataTypeId::BaseDataType.into()),
        other => other.data_type().map(|d| d.node_id),
    }
}

fn element_type(value_type: VariantScalarTypeId) -> NodeId {
    NodeId::new(0, value_type as u32)
}

fn is_built_in(id: &NodeId) -> bool {
    id.namespace == 0 && id.as_u32().is_some_and(|n| (1..=LAST_BUILT_IN).contains(&n))
}

/// Whether a value of type `actual` may be stored in a node of type `expected`.
fn type_fits(tree: &DefaultTypeTree, actual: &NodeId, expected: &NodeId) -> bool {
    if tree.is_subtype_of(actual, expected) {
        return true;
    }
    // Subtypes of built-in types travel as their built-in type (UtcTime as DateTime, Duration as Double, LocaleId
    // as String), and enumerations as Int32; a client has no other way to send them.
    (is_built_in(actual) && tree.is_subtype_of(expected, actual))
        || (*actual == DataTypeId::Int32 && tree.is_subtype_of(expected, &DataTypeId::Enumeration.into()))
}

fn rank_fits(value_rank: i32, dimensions: Option<usize>) -> bool {
    match (value_rank, dimensions) {
        (-2, _) => true,
        (-3, None | Some(1)) => true,
        (-1, None) => true,
        (0, Some(_)) => true,
        (n, Some(d)) if n > 0 => usize::try_from(n).is_ok_and(|n| n == d),
        _ => false,
    }
}

/// Checks `value` against a DataType (subtypes allowed, see [`type_fits`]) and a ValueRank; `Err` is
/// BadTypeMismatch. A null value fits only BaseDataType; a ByteString fits a one-dimensional Byte array.
pub(crate) fn check(
    tree: &DefaultTypeTree,
    value: &Variant,
    data_type: &NodeId,
    value_rank: i32,
) -> Result<(), StatusCode> {
    let any = *data_type == DataTypeId::BaseDataType;
    let fits = match value {
        Variant::Empty => any,
        Variant::ByteString(_) if *data_type == DataTypeId::Byte => matches!(value_rank, -3 | -2 | 0 | 1),
        Variant::Array(array) => {
            let dimensions = array.dimensions.as_ref().map_or(1, |d| d.len().max(1));
            rank_fits(value_rank, Some(dimensions))
                && (any
                    || match array.value_type {
                        VariantScalarTypeId::ExtensionObject | VariantScalarTypeId::Variant => array
                            .values
                            .iter()
                            .all(|v| scalar_data_type(v).is_some_and(|t| type_fits(tree, &t, data_type))),
                        other => type_fits(tree, &element_type(other), data_type),
                    })
        }
        scalar => {
            rank_fits(value_rank, None)
                && (any || scalar_data_type(scalar).is_some_and(|t| type_fits(tree, &t, data_type)))
        }
    };
    if fits {
        Ok(())
    } else {
        Err(StatusCode::BadTypeMismatch)
    }
}
