//! The filling line in an OPC UA address space.
//!
//! ```text
//! Objects/
//!   FillingLine                      ns=<urn:certvault:demo:filling-line>;s=FillingLine
//!     State          String          Idle | Running | Stopped | Fault
//!     SpeedSetpoint  Double          bottles/min, writable by operators (0 ..= 600, else BadOutOfRange)
//!     Temperature    Double          °C
//!     Pressure       Double          bar
//!     GoodParts      UInt64
//!     BadParts       UInt64
//!     Start()  Stop()  Reset()       callable by operators; refusals are BadInvalidState
//! ```
//! Clients find the namespace index by its URI ([`NAMESPACE_URI`]) in the server's NamespaceArray; the node ids
//! are strings, so [`LineNodes::in_namespace`] gives them for any index.

use std::sync::Arc;

use certvault_opcua::server::access::UserRole;
use certvault_opcua::server::address_space::{AddressSpaceError, MethodSpec, ObjectSpec, VariableSpec};
use certvault_opcua::server::{AddressSpace, SharedAddressSpace};
use opcua_types::{DataTypeId, NodeId, ObjectId, StatusCode, Variant};
use parking_lot::Mutex;

use crate::line::{FillingLine, Refusal, Snapshot};

/// The namespace URI of the filling line.
pub const NAMESPACE_URI: &str = "urn:certvault:demo:filling-line";

/// The line shared between the address space's callbacks and the simulation task.
pub type SharedLine = Arc<Mutex<FillingLine>>;

/// The NodeIds of the filling line.
#[derive(Clone, Debug, PartialEq)]
pub struct LineNodes {
    /// The namespace index.
    pub ns: u16,
    /// The object `FillingLine`.
    pub line: NodeId,
    /// String: Idle, Running, Stopped, Fault.
    pub state: NodeId,
    /// Double, writable by operators.
    pub speed_setpoint: NodeId,
    /// Double, °C.
    pub temperature: NodeId,
    /// Double, bar.
    pub pressure: NodeId,
    /// UInt64.
    pub good_parts: NodeId,
    /// UInt64.
    pub bad_parts: NodeId,
    /// Method Start().
    pub start: NodeId,
    /// Method Stop().
    pub stop: NodeId,
    /// Method Reset().
    pub reset: NodeId,
}

impl LineNodes {
    /// The node ids in namespace `ns`.
    pub fn in_namespace(ns: u16) -> Self {
        let id = |s: &str| NodeId::new(ns, s);
        LineNodes {
            ns,
            line: id("FillingLine"),
            state: id("FillingLine.State"),
            speed_setpoint: id("FillingLine.SpeedSetpoint"),
            temperature: id("FillingLine.Temperature"),
            pressure: id("FillingLine.Pressure"),
            good_parts: id("FillingLine.GoodParts"),
            bad_parts: id("FillingLine.BadParts"),
            start: id("FillingLine.Start"),
            stop: id("FillingLine.Stop"),
            reset: id("FillingLine.Reset"),
        }
    }

    /// The process values with their browse names, in display order.
    pub fn values(&self) -> Vec<(&'static str, NodeId)> {
        vec![
            ("State", self.state.clone()),
            ("SpeedSetpoint", self.speed_setpoint.clone()),
            ("Temperature", self.temperature.clone()),
            ("Pressure", self.pressure.clone()),
            ("GoodParts", self.good_parts.clone()),
            ("BadParts", self.bad_parts.clone()),
        ]
    }
}

/// Adds the filling line to `space`: the object, its variables (initialised from `line`), and the methods, which
/// act on `line`.
pub fn build(space: &mut AddressSpace, line: &SharedLine) -> Result<LineNodes, AddressSpaceError> {
    let ns = space.add_namespace(NAMESPACE_URI);
    let nodes = LineNodes::in_namespace(ns);
    let now = line.lock().snapshot();
    space.add_object(
        ObjectSpec::new(nodes.line.clone(), "FillingLine", ObjectId::ObjectsFolder)
            .description("A simulated bottle filling line"),
    )?;
    let variable = |id: &NodeId, name: &str, data_type: DataTypeId, value: Variant| {
        VariableSpec::new(id.clone(), name, nodes.line.clone()).data_type(data_type).value(value)
    };
    space.add_variable(
        variable(&nodes.state, "State", DataTypeId::String, now.state.as_str().into())
            .description("Idle, Running, Stopped or Fault"),
    )?;
    let writer = line.clone();
    space.add_variable(
        variable(&nodes.speed_setpoint, "SpeedSetpoint", DataTypeId::Double, now.speed_setpoint.into())
            .description("Bottles per minute")
            .eu_range(0.0, line.lock().params().max_speed)
            .write_role(UserRole::Operator)
            .on_write(move |_ctx, value| {
                let speed = match value {
                    Variant::Double(v) => *v,
                    Variant::Float(v) => f64::from(*v),
                    _ => return Err(StatusCode::BadTypeMismatch),
                };
                writer.lock().set_speed(speed).map_err(|e| refused(&e))
            }),
    )?;
    space.add_variable(
        variable(&nodes.temperature, "Temperature", DataTypeId::Double, now.temperature.into()).description("°C"),
    )?;
    space.add_variable(
        variable(&nodes.pressure, "Pressure", DataTypeId::Double, now.pressure.into()).description("bar"),
    )?;
    space.add_variable(variable(&nodes.good_parts, "GoodParts", DataTypeId::UInt64, now.good_parts.into()))?;
    space.add_variable(variable(&nodes.bad_parts, "BadParts", DataTypeId::UInt64, now.bad_parts.into()))?;
    let method = |id: &NodeId, name: &'static str, act: fn(&mut FillingLine) -> Result<(), Refusal>| {
        let line = line.clone();
        MethodSpec::new(id.clone(), name, nodes.line.clone(), move |call| {
            let result = act(&mut line.lock());
            if let Err(e) = &result {
                tracing::info!(caller = %call.principal.name, "{name} refused: {e}");
            } else {
                tracing::info!(caller = %call.principal.name, "{name}");
            }
            async move { result.map(|()| Vec::new()).map_err(|e| e.status_code()) }
        })
        .call_role(UserRole::Operator)
    };
    space.add_method(method(&nodes.start, "Start", FillingLine::start).description("Start filling"))?;
    space.add_method(method(&nodes.stop, "Stop", FillingLine::stop).description("Stop filling"))?;
    space
        .add_method(method(&nodes.reset, "Reset", FillingLine::reset).description("Clear a fault and the counters"))?;
    Ok(nodes)
}

fn refused(e: &Refusal) -> StatusCode {
    tracing::info!("write refused: {e}");
    e.status_code()
}

/// Writes a snapshot into the address space (subscriptions see the changes).
pub fn publish(space: &SharedAddressSpace, nodes: &LineNodes, now: &Snapshot) -> Result<(), AddressSpaceError> {
    space.set_value(&nodes.state, now.state.as_str())?;
    space.set_value(&nodes.speed_setpoint, now.speed_setpoint)?;
    space.set_value(&nodes.temperature, now.temperature)?;
    space.set_value(&nodes.pressure, now.pressure)?;
    space.set_value(&nodes.good_parts, now.good_parts)?;
    space.set_value(&nodes.bad_parts, now.bad_parts)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use certvault_opcua::server::{AddressSpaceLimits, ApplicationInfo};
    use opcua_types::DateTime;

    fn space() -> AddressSpace {
        let info = ApplicationInfo {
            application_uri: "urn:test:a".into(),
            product_uri: "urn:test".into(),
            application_name: "test".into(),
        };
        AddressSpace::new(&info, AddressSpaceLimits::default(), DateTime::now())
    }

    #[test]
    fn the_namespace_holds_every_node_and_follows_the_line() {
        let mut space = space();
        let line: SharedLine = Arc::new(Mutex::new(FillingLine::default()));
        let nodes = build(&mut space, &line).unwrap();
        assert_eq!(space.namespace_index(NAMESPACE_URI), Some(nodes.ns));
        assert_eq!(nodes, LineNodes::in_namespace(nodes.ns));
        for id in [&nodes.line, &nodes.start, &nodes.stop, &nodes.reset] {
            assert!(space.contains(id), "{id}");
        }
        for (_, id) in nodes.values() {
            assert!(space.contains(&id), "{id}");
        }
        let shared = SharedAddressSpace::new(space);
        let value = |id: &NodeId| shared.value(id).and_then(|v| v.value).unwrap();
        assert_eq!(value(&nodes.state), Variant::from("Idle"));
        line.lock().start().unwrap();
        line.lock().advance(std::time::Duration::from_secs(3));
        publish(&shared, &nodes, &line.lock().snapshot()).unwrap();
        assert_eq!(value(&nodes.state), Variant::from("Running"));
        assert_eq!(value(&nodes.good_parts), Variant::UInt64(6));
        assert_eq!(shared.read_guard().write_role(&nodes.speed_setpoint), UserRole::Operator);
    }
}
