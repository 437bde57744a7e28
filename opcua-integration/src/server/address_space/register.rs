//! RegisterNodes and UnregisterNodes. Every node id is already as fast to use as it gets, so registering echoes
//! the ids (Part 4 §5.8.5 allows that); the services exist so clients that use them work.

use opcua_types::{
    RegisterNodesRequest, RegisterNodesResponse, ResponseHeader, StatusCode, UnregisterNodesRequest,
    UnregisterNodesResponse,
};

use super::{check_operation_count, AddressSpace};
use crate::server::access::RequestContext;

impl AddressSpace {
    /// RegisterNodes service: the same ids back. Service faults: BadNothingToDo, BadTooManyOperations.
    pub fn register_nodes(
        &self,
        ctx: &RequestContext,
        request: &RegisterNodesRequest,
    ) -> Result<RegisterNodesResponse, StatusCode> {
        let ids = check_operation_count(&request.nodes_to_register, self.limits.max_nodes_per_register)?;
        Ok(RegisterNodesResponse {
            response_header: ResponseHeader::new_timestamped_service_result(
                ctx.now.utc,
                &request.request_header,
                StatusCode::Good,
            ),
            registered_node_ids: Some(ids.to_vec()),
        })
    }

    /// UnregisterNodes service. Service faults: BadNothingToDo, BadTooManyOperations.
    pub fn unregister_nodes(
        &self,
        ctx: &RequestContext,
        request: &UnregisterNodesRequest,
    ) -> Result<UnregisterNodesResponse, StatusCode> {
        check_operation_count(&request.nodes_to_unregister, self.limits.max_nodes_per_register)?;
        Ok(UnregisterNodesResponse {
            response_header: ResponseHeader::new_timestamped_service_result(
                ctx.now.utc,
                &request.request_header,
                StatusCode::Good,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use opcua_types::NodeId;

    use super::*;
    use crate::server::access::UserRole;
    use crate::server::address_space::tests::{ctx, space};

    #[test]
    fn register_echoes_and_checks_counts() {
        let space = space();
        let ctx = ctx(UserRole::Anonymous);
        let ids = vec![NodeId::new(2, "a"), NodeId::new(0, 2253u32)];
        let request = RegisterNodesRequest { nodes_to_register: Some(ids.clone()), ..Default::default() };
        assert_eq!(space.register_nodes(&ctx, &request).unwrap().registered_node_ids, Some(ids.clone()));
        let empty = RegisterNodesRequest { nodes_to_register: None, ..Default::default() };
        assert_eq!(space.register_nodes(&ctx, &empty).err(), Some(StatusCode::BadNothingToDo));
        let many = RegisterNodesRequest { nodes_to_register: Some(vec![NodeId::new(2, "a"); 8]), ..Default::default() };
        assert_eq!(space.register_nodes(&ctx, &many).err(), Some(StatusCode::BadTooManyOperations));

        let request = UnregisterNodesRequest { nodes_to_unregister: Some(ids), ..Default::default() };
        assert_eq!(
            space.unregister_nodes(&ctx, &request).map(|r| r.response_header.service_result),
            Ok(StatusCode::Good)
        );
        let empty = UnregisterNodesRequest { nodes_to_unregister: Some(vec![]), ..Default::default() };
        assert_eq!(space.unregister_nodes(&ctx, &empty).err(), Some(StatusCode::BadNothingToDo));
        let many =
            UnregisterNodesRequest { nodes_to_unregister: Some(vec![NodeId::new(2, "a"); 8]), ..Default::default() };
        assert_eq!(space.unregister_nodes(&ctx, &many).err(), Some(StatusCode::BadTooManyOperations));
    }
}
