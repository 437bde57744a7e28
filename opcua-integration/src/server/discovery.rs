//! The discovery services a server answers without a session: GetEndpoints and FindServers (Part 4 §5.4). Every
//! other request belongs to the session layer ([`super::services`]).

use opcua_types::{
    ApplicationDescription, ApplicationType, ByteString, EndpointDescription, FindServersRequest, FindServersResponse,
    GetEndpointsRequest, GetEndpointsResponse, LocalizedText, ObjectId, RequestHeader, ResponseHeader, ServiceFault,
    StatusCode, UAString,
};

use super::user_token::{self, UserTokenKinds};
use crate::channel::policy::{SecurityMode, SecurityPolicy};
use crate::channel::secure_channel::Now;
use crate::service::BodyCodec;
use crate::transport::tcp::{ChannelInfo, Reply, ServiceHandler};

/// The transport profile of UA TCP with UA Secure Conversation and UA Binary.
pub const TRANSPORT_PROFILE_URI: &str = "http://opcfoundation.org/UA-Profile/Transport/uatcp-uasc-uabinary";

/// How a server describes itself.
#[derive(Clone, Debug)]
pub struct ApplicationInfo {
    /// The ApplicationUri (also in the certificate's subjectAltName).
    pub application_uri: String,
    /// The ProductUri.
    pub product_uri: String,
    /// The human-readable name.
    pub application_name: String,
}

/// Relative strength of a (policy, mode) pair: higher is stronger. Clients that pick "the best endpoint" sort on it.
pub fn security_level(policy: SecurityPolicy, mode: SecurityMode) -> u8 {
    let policy_rank = match policy {
        SecurityPolicy::None => return 0,
        SecurityPolicy::Basic128Rsa15 => 1,
        SecurityPolicy::Basic256 => 2,
        SecurityPolicy::Aes128Sha256RsaOaep => 3,
        SecurityPolicy::Basic256Sha256 => 4,
        SecurityPolicy::Aes256Sha256RsaPss => 5,
    };
    // Encryption outranks any signing-only endpoint.
    match mode {
        SecurityMode::SignAndEncrypt => policy_rank + 10,
        _ => policy_rank,
    }
}

/// Answers the discovery services for one server.
#[derive(Debug)]
pub struct Discovery {
    application: ApplicationDescription,
    endpoints: Vec<EndpointDescription>,
    codec: BodyCodec,
}

impl Discovery {
    /// Describes the endpoints at `endpoint_url`: one per (policy, mode), all with `certificate` (DER; empty when
    /// only None is offered) and the user token policies of `tokens`, strongest first.
    pub fn new(
        info: &ApplicationInfo,
        endpoint_url: &str,
        certificate: &[u8],
        endpoints: &[(SecurityPolicy, SecurityMode)],
        tokens: UserTokenKinds,
    ) -> Self {
        let application = ApplicationDescription {
            application_uri: info.application_uri.as_str().into(),
            product_uri: info.product_uri.as_str().into(),
            application_name: LocalizedText::new("", &info.application_name),
            application_type: ApplicationType::Server,
            gateway_server_uri: UAString::null(),
            discovery_profile_uri: UAString::null(),
            discovery_urls: Some(vec![endpoint_url.into()]),
        };
        let certificate =
            if certificate.is_empty() { ByteString::null() } else { ByteString::from(certificate.to_vec()) };
        let mut endpoints: Vec<EndpointDescription> = endpoints
            .iter()
            .map(|&(policy, mode)| EndpointDescription {
                endpoint_url: endpoint_url.into(),
                server: application.clone(),
                server_certificate: certificate.clone(),
                security_mode: mode.to_wire(),
                security_policy_uri: policy.uri().into(),
                user_identity_tokens: Some(user_token::policies(tokens, policy, !certificate.is_null())),
                transport_profile_uri: TRANSPORT_PROFILE_URI.into(),
                security_level: security_level(policy, mode),
            })
            .collect();
        endpoints.sort_by_key(|e| std::cmp::Reverse(e.security_level));
        Discovery { application, endpoints, codec: BodyCodec::new() }
    }

    /// The same endpoints with another server certificate (DER), after a certificate update.
    pub fn with_certificate(&self, certificate: &[u8]) -> Discovery {
        let certificate = ByteString::from(certificate.to_vec());
        let endpoints = self
            .endpoints
            .iter()
            .map(|e| {
                let mut e = e.clone();
                if !e.server_certificate.is_null() {
                    e.server_certificate = certificate.clone();
                }
                e
            })
            .collect();
        Discovery { application: self.application.clone(), endpoints, codec: BodyCodec::new() }
    }

    /// The endpoint descriptions, strongest first.
    pub fn endpoints(&self) -> &[EndpointDescription] {
        &self.endpoints
    }

    /// The server's application description.
    pub fn application(&self) -> &ApplicationDescription {
        &self.application
    }

    fn get_endpoints(&self, request: &GetEndpointsRequest, now: Now) -> GetEndpointsResponse {
        // A client filtering on transport profiles gets only what it asked for; we offer one profile.
        let wanted = request
            .profile_uris
            .as_ref()
            .is_none_or(|uris| uris.is_empty() || uris.iter().any(|u| u.as_ref() == TRANSPORT_PROFILE_URI));
        GetEndpointsResponse {
            response_header: ResponseHeader::new_timestamped_service_result(
                now.utc,
                &request.request_header,
                StatusCode::Good,
            ),
            endpoints: Some(if wanted { self.endpoints.clone() } else { Vec::new() }),
        }
    }

    fn find_servers(&self, request: &FindServersRequest, now: Now) -> FindServersResponse {
        let wanted = request.server_uris.as_ref().is_none_or(|uris| {
            uris.is_empty() || uris.iter().any(|u| u.as_ref() == self.application.application_uri.as_ref())
        });
        FindServersResponse {
            response_header: ResponseHeader::new_timestamped_service_result(
                now.utc,
                &request.request_header,
                StatusCode::Good,
            ),
            servers: Some(if wanted { vec![self.application.clone()] } else { Vec::new() }),
        }
    }

    fn fault(&self, header: Option<&RequestHeader>, status: StatusCode, now: Now) -> Vec<u8> {
        let handle = header.map(|h| h.request_handle).unwrap_or_default();
        let fault =
            ServiceFault { response_header: ResponseHeader::new_timestamped_service_result(now.utc, handle, status) };
        // A ServiceFault of a ResponseHeader always encodes; an empty body would only make the client time out.
        self.codec.encode(ObjectId::ServiceFault_Encoding_DefaultBinary, &fault).unwrap_or_default()
    }

    /// Answers one request body with a response body.
    pub fn answer(&self, body: &[u8], now: Now) -> Vec<u8> {
        let (id, at) = match self.codec.peek_id(body) {
            Ok(v) => v,
            Err(e) => return self.fault(None, e.status_code(), now),
        };
        let encoded = match id {
            ObjectId::GetEndpointsRequest_Encoding_DefaultBinary => {
                self.codec.decode_at::<GetEndpointsRequest>(body, at).and_then(|r| {
                    self.codec
                        .encode(ObjectId::GetEndpointsResponse_Encoding_DefaultBinary, &self.get_endpoints(&r, now))
                })
            }
            ObjectId::FindServersRequest_Encoding_DefaultBinary => {
                self.codec.decode_at::<FindServersRequest>(body, at).and_then(|r| {
                    self.codec.encode(ObjectId::FindServersResponse_Encoding_DefaultBinary, &self.find_servers(&r, now))
                })
            }
            _ => {
                let header = self.codec.decode_at::<RequestHeader>(body, at).ok();
                return self.fault(header.as_ref(), StatusCode::BadServiceUnsupported, now);
            }
        };
        match encoded {
            Ok(response) => response,
            Err(e) => {
                let header = self.codec.decode_at::<RequestHeader>(body, at).ok();
                self.fault(header.as_ref(), e.status_code(), now)
            }
        }
    }
}

impl ServiceHandler for Discovery {
    fn handle(&self, body: Vec<u8>, _channel: &ChannelInfo, now: Now) -> Reply {
        Reply::Ready(self.answer(&body, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opcua_types::{DateTime, NodeId, ReadRequest};

    fn discovery() -> Discovery {
        let info = ApplicationInfo {
            application_uri: "urn:test:server".into(),
            product_uri: "urn:test".into(),
            application_name: "Test".into(),
        };
        Discovery::new(
            &info,
            "opc.tcp://127.0.0.1:4840/",
            b"\x30\x00",
            &[
                (SecurityPolicy::None, SecurityMode::None),
                (SecurityPolicy::Basic256Sha256, SecurityMode::Sign),
                (SecurityPolicy::Aes256Sha256RsaPss, SecurityMode::SignAndEncrypt),
            ],
            UserTokenKinds::default(),
        )
    }

    #[test]
    fn get_endpoints_lists_strongest_first_and_faults_the_rest() {
        let d = discovery();
        let codec = BodyCodec::shared();
        let now = Now::system();
        let request = GetEndpointsRequest {
            request_header: RequestHeader::new(&NodeId::null(), &DateTime::now(), 3),
            endpoint_url: "opc.tcp://127.0.0.1:4840/".into(),
            locale_ids: None,
            profile_uris: None,
        };
        let body = codec.encode(ObjectId::GetEndpointsRequest_Encoding_DefaultBinary, &request).unwrap();
        let response: GetEndpointsResponse = codec
            .decode_response(ObjectId::GetEndpointsResponse_Encoding_DefaultBinary, &d.answer(&body, now))
            .unwrap();
        let endpoints = response.endpoints.unwrap();
        let levels: Vec<u8> = endpoints.iter().map(|e| e.security_level).collect();
        assert_eq!(levels, vec![15, 4, 0]);
        assert_eq!(endpoints[0].security_policy_uri.as_ref(), SecurityPolicy::Aes256Sha256RsaPss.uri());
        assert_eq!(endpoints[0].transport_profile_uri.as_ref(), TRANSPORT_PROFILE_URI);
        assert_eq!(response.response_header.request_handle, 3);

        let read = ReadRequest {
            request_header: RequestHeader::new(&NodeId::null(), &DateTime::now(), 9),
            ..Default::default()
        };
        let body = codec.encode(ObjectId::ReadRequest_Encoding_DefaultBinary, &read).unwrap();
        let err = codec
            .decode_response::<GetEndpointsResponse>(
                ObjectId::GetEndpointsResponse_Encoding_DefaultBinary,
                &d.answer(&body, now),
            )
            .unwrap_err();
        assert_eq!(err.status_code(), StatusCode::BadServiceUnsupported);
        let err = codec
            .decode_response::<GetEndpointsResponse>(
                ObjectId::GetEndpointsResponse_Encoding_DefaultBinary,
                &d.answer(b"\xff", now),
            )
            .unwrap_err();
        assert!(err.status_code().is_bad());
    }
}
