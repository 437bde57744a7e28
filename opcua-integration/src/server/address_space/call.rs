//! The Call service, in two steps: [`AddressSpace::prepare_call`] checks everything under the address space lock,
//! [`PreparedCall::run`] runs the handlers after it is released, so a slow method blocks neither reads nor writes
//! and may itself use the [`SharedAddressSpace`](super::SharedAddressSpace).
//!
//! Argument type errors: the method's status is BadInvalidArgument and each argument's result says which one is
//! wrong (BadTypeMismatch), as Part 4 §5.11.2 prescribes.

use std::sync::Arc;

use opcua_nodes::NodeType;
use opcua_types::{
    CallMethodRequest, CallMethodResult, CallRequest, CallResponse, NodeId, ReferenceTypeId, ResponseHeader,
    StatusCode, Variant,
};

use super::{check_operation_count, value_type, AddressSpace, MethodHandler};
use crate::channel::secure_channel::Now;
use crate::server::access::{Principal, RequestContext};

/// What a method handler is given.
#[derive(Clone, Debug)]
pub struct MethodCall {
    /// The object the method was called on.
    pub object_id: NodeId,
    /// The method.
    pub method_id: NodeId,
    /// The input arguments, already checked against the method's InputArguments.
    pub inputs: Vec<Variant>,
    /// Who calls.
    pub principal: Arc<Principal>,
    /// The calling session.
    pub session_id: NodeId,
    /// When the request is served.
    pub now: Now,
    /// The security mode of the caller's channel.
    pub security_mode: crate::channel::policy::SecurityMode,
}

enum Step {
    Done(CallMethodResult),
    Run { handler: MethodHandler, call: MethodCall, input_count: usize, output_count: usize },
}

/// A checked Call request whose handlers have not run yet.
pub struct PreparedCall {
    header: ResponseHeader,
    steps: Vec<Step>,
}

impl std::fmt::Debug for PreparedCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedCall").field("methods", &self.steps.len()).finish_non_exhaustive()
    }
}

fn refused(status: StatusCode) -> CallMethodResult {
    CallMethodResult { status_code: status, ..Default::default() }
}

impl PreparedCall {
    /// Runs the handlers one after the other, in request order (methods on one machine often depend on the
    /// order they are asked in), and assembles the response.
    pub async fn run(self) -> CallResponse {
        let mut results = Vec::with_capacity(self.steps.len());
        for step in self.steps {
            results.push(match step {
                Step::Done(result) => result,
                Step::Run { handler, call, input_count, output_count } => {
                    let method = call.method_id.clone();
                    match handler(call).await {
                        Ok(outputs) => {
                            if outputs.len() != output_count {
                                // The application's bug, not the client's: the outputs still go out as they are.
                                tracing::warn!(%method, declared = output_count, returned = outputs.len(), "method outputs differ from OutputArguments");
                            }
                            CallMethodResult {
                            status_code: StatusCode::Good,
                            input_argument_results: Some(vec![StatusCode::Good; input_count]),
                            input_argument_diagnostic_infos: None,
                            output_arguments: Some(outputs),
                            }
                        }
                        Err(status) => {
                            tracing::debug!(%method, %status, "method failed");
                            refused(status)
                        }
                    }
                }
            });
        }
        CallResponse { response_header: self.header, results: Some(results), diagnostic_infos: None }
    }
}

impl AddressSpace {
    /// The checking half of the Call service. Service faults: BadNothingToDo, BadTooManyOperations. Per method:
    /// BadNodeIdUnknown (object), BadMethodInvalid (no such method, or not a component of the object),
    /// BadNotImplemented (no handler), BadNotExecutable, BadUserAccessDenied, BadArgumentsMissing,
    /// BadTooManyArguments, BadInvalidArgument with per-argument BadTypeMismatch.
    pub fn prepare_call(&self, ctx: &RequestContext, request: &CallRequest) -> Result<PreparedCall, StatusCode> {
        let methods = check_operation_count(&request.methods_to_call, self.limits.max_nodes_per_call)?;
        let steps = methods
            .iter()
            .map(|method| match self.prepare_one(ctx, method) {
                Ok(step) => step,
                Err(status) => {
                    tracing::debug!(method = %method.method_id, %status, "call refused");
                    Step::Done(refused(status))
                }
            })
            .collect();
        let header =
            ResponseHeader::new_timestamped_service_result(ctx.now.utc, &request.request_header, StatusCode::Good);
        Ok(PreparedCall { header, steps })
    }

    fn prepare_one(&self, ctx: &RequestContext, request: &CallMethodRequest) -> Result<Step, StatusCode> {
        match self.nodes.get(&request.object_id) {
            Some(NodeType::Object(_) | NodeType::ObjectType(_)) => {}
            Some(_) => return Err(StatusCode::BadNodeIdInvalid),
            None => return Err(StatusCode::BadNodeIdUnknown),
        }
        let Some(NodeType::Method(method)) = self.nodes.get(&request.method_id) else {
            return Err(StatusCode::BadMethodInvalid);
        };
        if !self.has_forward_reference(&request.object_id, &request.method_id, ReferenceTypeId::HasComponent) {
            return Err(StatusCode::BadMethodInvalid);
        }
        let behaviour = self.methods.get(&request.method_id).ok_or(StatusCode::BadNotImplemented)?;
        if !method.executable() {
            return Err(StatusCode::BadNotExecutable);
        }
        if !ctx.principal.role.allows(behaviour.call_role) {
            return Err(StatusCode::BadUserAccessDenied);
        }
        let inputs = request.input_arguments.clone().unwrap_or_default();
        if inputs.len() < behaviour.inputs.len() {
            return Err(StatusCode::BadArgumentsMissing);
        }
        if inputs.len() > behaviour.inputs.len() {
            return Err(StatusCode::BadTooManyArguments);
        }
        let checks: Vec<StatusCode> = inputs
            .iter()
            .zip(&behaviour.inputs)
            .map(|(value, argument)| {
                match value_type::check(&self.type_tree, value, &argument.data_type, argument.value_rank) {
                    Ok(()) => StatusCode::Good,
                    Err(status) => status,
                }
            })
            .collect();
        if checks.iter().any(|s| s.is_bad()) {
            return Ok(Step::Done(CallMethodResult {
                status_code: StatusCode::BadInvalidArgument,
                input_argument_results: Some(checks),
                input_argument_diagnostic_infos: None,
                output_arguments: None,
            }));
        }
        let input_count = inputs.len();
        Ok(Step::Run {
            handler: behaviour.handler.clone(),
            call: MethodCall {
                object_id: request.object_id.clone(),
                method_id: request.method_id.clone(),
                inputs,
                principal: ctx.principal.clone(),
                session_id: ctx.session_id.clone(),
                now: ctx.now,
                security_mode: ctx.security_mode,
            },
            input_count,
            output_count: behaviour.outputs.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use opcua_types::{DataTypeId, MethodId, ObjectId};

    use super::*;
    use crate::server::access::UserRole;
    use crate::server::address_space::tests::{argument, ctx, machine, Machine, NS};
    use crate::server::address_space::{MethodSpec, SharedAddressSpace};

    fn call(object: &NodeId, method: &NodeId, inputs: Vec<Variant>) -> CallMethodRequest {
        CallMethodRequest { object_id: object.clone(), method_id: method.clone(), input_arguments: Some(inputs) }
    }

    fn run(
        space: &AddressSpace,
        role: UserRole,
        calls: Vec<CallMethodRequest>,
    ) -> Result<Vec<CallMethodResult>, StatusCode> {
        let request = CallRequest { methods_to_call: Some(calls), ..Default::default() };
        let prepared = space.prepare_call(&ctx(role), &request)?;
        Ok(futures_executor_lite(prepared.run()).results.unwrap_or_default())
    }

    /// Drives a prepared call to completion outside an async test.
    fn futures_executor_lite<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(future)
    }

    #[test]
    fn operators_call_and_get_outputs() {
        let Machine { space, machine, start, .. } = machine();
        let result = run(&space, UserRole::Operator, vec![call(&machine, &start, vec![Variant::Double(1200.0)])])
            .unwrap()
            .remove(0);
        assert_eq!(result.status_code, StatusCode::Good);
        assert_eq!(result.output_arguments, Some(vec![Variant::Double(1200.0)]));
        assert_eq!(result.input_argument_results, Some(vec![StatusCode::Good]));
        let failed = run(&space, UserRole::Operator, vec![call(&machine, &start, vec![Variant::Double(9999.0)])])
            .unwrap()
            .remove(0);
        assert_eq!(failed.status_code, StatusCode::BadOutOfRange, "the handler's own status");
    }

    #[test]
    fn roles_decide_who_calls() {
        let Machine { space, machine, start, reset, .. } = machine();
        let start_call = call(&machine, &start, vec![Variant::Double(1.0)]);
        let status = |role, c: &CallMethodRequest| run(&space, role, vec![c.clone()]).unwrap()[0].status_code;
        assert_eq!(status(UserRole::Anonymous, &start_call), StatusCode::BadUserAccessDenied);
        assert_eq!(status(UserRole::Observer, &start_call), StatusCode::BadUserAccessDenied);
        assert_eq!(status(UserRole::Operator, &start_call), StatusCode::Good);
        let reset_call = call(&machine, &reset, vec![]);
        assert_eq!(status(UserRole::Operator, &reset_call), StatusCode::BadUserAccessDenied);
        assert_eq!(status(UserRole::Administrator, &reset_call), StatusCode::Good);
    }

    #[test]
    fn status_codes() {
        let Machine { space, machine, start, speed, .. } = machine();
        let op = UserRole::Operator;
        assert_eq!(run(&space, op, vec![]).err(), Some(StatusCode::BadNothingToDo));
        let one = call(&machine, &start, vec![Variant::Double(1.0)]);
        assert_eq!(run(&space, op, vec![one; 8]).err(), Some(StatusCode::BadTooManyOperations));
        let server: NodeId = ObjectId::Server.into();
        let get_monitored: NodeId = MethodId::Server_GetMonitoredItems.into();
        let results = run(
            &space,
            op,
            vec![
                call(&NodeId::new(2, "nothing"), &start, vec![Variant::Double(1.0)]),
                call(&machine, &NodeId::new(2, "nothing"), vec![]),
                call(&server, &start, vec![Variant::Double(1.0)]),
                call(&machine, &speed, vec![]),
                call(&server, &get_monitored, vec![Variant::UInt32(1)]),
                call(&machine, &start, vec![]),
                call(&machine, &start, vec![Variant::Double(1.0), Variant::Double(2.0)]),
            ],
        )
        .unwrap();
        let codes: Vec<StatusCode> = results.iter().map(|r| r.status_code).collect();
        assert_eq!(
            codes,
            vec![
                StatusCode::BadNodeIdUnknown,
                StatusCode::BadMethodInvalid,
                StatusCode::BadMethodInvalid,
                StatusCode::BadMethodInvalid,
                StatusCode::BadNotImplemented,
                StatusCode::BadArgumentsMissing,
                StatusCode::BadTooManyArguments,
            ]
        );
    }

    #[test]
    fn argument_types_are_checked_one_by_one() {
        let Machine { mut space, machine, .. } = machine();
        let ns = space.add_namespace(NS);
        let method = space
            .add_method(
                MethodSpec::new(NodeId::new(ns, "Machine.Move"), "Move", machine.clone(), |_| async { Ok(vec![]) })
                    .inputs(vec![argument("axis", DataTypeId::String), argument("distance", DataTypeId::Number)]),
            )
            .unwrap();
        let status = |inputs: Vec<Variant>| {
            run(&space, UserRole::Operator, vec![call(&machine, &method, inputs)]).unwrap().remove(0)
        };
        let wrong = status(vec![Variant::Int32(1), Variant::Float(2.0)]);
        assert_eq!(wrong.status_code, StatusCode::BadInvalidArgument);
        assert_eq!(wrong.input_argument_results, Some(vec![StatusCode::BadTypeMismatch, StatusCode::Good]));
        let right = status(vec![Variant::from("x"), Variant::Float(2.0)]);
        assert_eq!(right.status_code, StatusCode::Good, "Float is a Number");
    }

    #[tokio::test]
    async fn handlers_run_without_the_lock() {
        let Machine { mut space, machine, speed, .. } = machine();
        let ns = space.add_namespace(NS);
        let shared_slot: Arc<std::sync::Mutex<Option<SharedAddressSpace>>> = Arc::default();
        let slot = shared_slot.clone();
        let wrote = Arc::new(AtomicBool::new(false));
        let flag = wrote.clone();
        let target = speed.clone();
        let method = space
            .add_method(MethodSpec::new(NodeId::new(ns, "Machine.Boost"), "Boost", machine.clone(), move |_| {
                let shared = slot.lock().unwrap().clone();
                let target = target.clone();
                let flag = flag.clone();
                async move {
                    // Taking the write lock here would deadlock if Call still held the read lock.
                    let shared = shared.ok_or(StatusCode::BadInternalError)?;
                    shared.set_value(&target, 2000.0).map_err(|e| e.status_code())?;
                    flag.store(true, Ordering::SeqCst);
                    Ok(vec![])
                }
            }))
            .unwrap();
        let shared = SharedAddressSpace::new(space);
        *shared_slot.lock().unwrap() = Some(shared.clone());
        let request =
            CallRequest { methods_to_call: Some(vec![call(&machine, &method, vec![])]), ..Default::default() };
        let response = shared.call(&ctx(UserRole::Operator), &request).await.unwrap();
        assert_eq!(response.results.unwrap()[0].status_code, StatusCode::Good);
        assert!(wrote.load(Ordering::SeqCst));
        assert_eq!(shared.value(&speed).and_then(|v| v.value), Some(Variant::Double(2000.0)));
    }
}
