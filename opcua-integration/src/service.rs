//! Service message bodies: the NodeId of a structure's binary encoding followed by the structure (Part 6 §5.2.9),
//! as they travel inside MSG chunks. Encoding and decoding go through `async-opcua-types`.

use std::io::Cursor;

use opcua_types::{
    BinaryDecodable, BinaryEncodable, ContextOwned, DateTime, DecodingOptions, NamespaceMap, NodeId, ObjectId,
    RequestHeader, ResponseHeader, ServiceFault, StatusCode,
};

use crate::error::{Error, Result};

/// Most elements of one array in a body. async-opcua's default (1000) equals the usual operation limits (Part 5
/// MaxNodesPerRead etc.), so a Read of 1001 nodes failed to decode (BadDecodingError) before the server could
/// answer BadTooManyOperations as Part 4 names, and a client could not decode a response with more than 1000
/// results. The whole body is bounded by the channel's MaxMessageSize anyway; this bounds what one length field
/// may make the decoder reserve before the elements are read.
pub const MAX_ARRAY_LENGTH: usize = 65_535;

/// Longest String or ByteString in a body: the default MaxMessageSize (16 MiB). async-opcua's default (65,535)
/// made a 1 MB ByteString value unreadable although the channel carries it; the channel's message-size limit is what
/// bounds a body, so a single value may use all of it.
pub const MAX_BYTE_STRING_LENGTH: usize = 16 * 1024 * 1024;

/// Encodes and decodes message bodies with one decoding context (limits on strings, arrays, nesting).
#[derive(Debug)]
pub struct BodyCodec {
    context: ContextOwned,
}

/// Our decoding limits: arrays up to [`MAX_ARRAY_LENGTH`], strings and byte strings up to [`MAX_BYTE_STRING_LENGTH`].
pub fn default_decoding_options() -> DecodingOptions {
    DecodingOptions {
        max_array_length: MAX_ARRAY_LENGTH,
        max_byte_string_length: MAX_BYTE_STRING_LENGTH,
        max_string_length: MAX_BYTE_STRING_LENGTH,
        ..DecodingOptions::default()
    }
}

impl Default for BodyCodec {
    fn default() -> Self {
        let mut context = ContextOwned::default();
        let options = context.options_mut();
        options.max_array_length = MAX_ARRAY_LENGTH;
        options.max_byte_string_length = MAX_BYTE_STRING_LENGTH;
        options.max_string_length = MAX_BYTE_STRING_LENGTH;
        BodyCodec { context }
    }
}

impl BodyCodec {
    /// A codec with the default decoding limits (arrays up to [`MAX_ARRAY_LENGTH`]).
    pub fn new() -> Self {
        BodyCodec::default()
    }

    /// One process-wide codec with the default limits. A decoding context allocates its type loaders and namespace
    /// map, so the server's per-request paths share this one rather than building a context per message.
    pub fn shared() -> &'static BodyCodec {
        static SHARED: std::sync::LazyLock<BodyCodec> = std::sync::LazyLock::new(BodyCodec::default);
        &SHARED
    }

    /// The encoding context (limits, namespaces) for codecs that write or parse parts of a body themselves.
    pub fn context(&self) -> opcua_types::Context<'_> {
        self.context.context()
    }

    /// The NodeId at the start of `body` (known as a message type or not), and where the structure starts.
    pub fn peek_node(&self, body: &[u8]) -> Result<(NodeId, usize)> {
        let ctx = self.context.context();
        let mut cursor = Cursor::new(body);
        let node = NodeId::decode(&mut cursor, &ctx)?;
        Ok((node, usize::try_from(cursor.position()).unwrap_or(usize::MAX)))
    }

    /// A ServiceFault with `status` in place of `response` (an encoded NodeId + response that cannot be sent), for
    /// the same request handle.
    pub fn fault_instead_of(&self, response: &[u8], status: StatusCode) -> Vec<u8> {
        let handle = self
            .peek_node(response)
            .ok()
            .and_then(|(_, at)| self.decode_at::<ResponseHeader>(response, at).ok())
            .map_or(0, |h| h.request_handle);
        let fault = ServiceFault {
            response_header: ResponseHeader::new_timestamped_service_result(DateTime::now(), handle, status),
        };
        // A ServiceFault of a ResponseHeader always encodes.
        self.encode(ObjectId::ServiceFault_Encoding_DefaultBinary, &fault).unwrap_or_default()
    }

    /// A codec with the limits in `options` (string, byte string and array lengths, nesting depth). The message
    /// size and chunk count in it are not used here: the transport [`Limits`](crate::transport::uacp::Limits)
    /// bound those.
    pub fn with_options(options: DecodingOptions) -> Self {
        BodyCodec { context: ContextOwned::new_default(NamespaceMap::new(), options) }
    }

    /// `id` (the `..._Encoding_DefaultBinary` object) followed by `value`.
    pub fn encode<T: BinaryEncodable>(&self, id: ObjectId, value: &T) -> Result<Vec<u8>> {
        let ctx = self.context.context();
        let node = NodeId::from(id as u32);
        let mut out = Vec::with_capacity(node.byte_len(&ctx) + value.byte_len(&ctx));
        node.encode(&mut out, &ctx)?;
        value.encode(&mut out, &ctx)?;
        Ok(out)
    }

    /// The encoding id at the start of `body`, and where the structure starts.
    pub fn peek_id(&self, body: &[u8]) -> Result<(ObjectId, usize)> {
        let (node, at) = self.peek_node(body)?;
        let id = node.as_object_id().map_err(|_| Error::Decoding(format!("unknown message type {node}")))?;
        Ok((id, at))
    }

    /// Decodes the structure that starts at `at`.
    pub fn decode_at<T: BinaryDecodable>(&self, body: &[u8], at: usize) -> Result<T> {
        let ctx = self.context.context();
        let mut cursor = Cursor::new(body.get(at..).unwrap_or_default());
        Ok(T::decode(&mut cursor, &ctx)?)
    }

    /// The two fields of the RequestHeader at `at` that route a request: the authenticationToken and the
    /// requestHandle. Cheaper than decoding the whole header (its timestamp, audit id and additional header), which
    /// the service decodes again with the request anyway.
    pub fn route_at(&self, body: &[u8], at: usize) -> Result<(NodeId, u32)> {
        let ctx = self.context.context();
        let mut cursor = Cursor::new(body.get(at..).unwrap_or_default());
        let token = NodeId::decode(&mut cursor, &ctx)?;
        // timestamp (DateTime, 8 bytes), then requestHandle (UInt32).
        let _timestamp = i64::decode(&mut cursor, &ctx)?;
        let handle = u32::decode(&mut cursor, &ctx)?;
        Ok((token, handle))
    }

    /// Decodes only the RequestHeader every request starts with: enough to fault a request we do not serve.
    pub fn request_header(&self, body: &[u8]) -> Result<RequestHeader> {
        let (_, at) = self.peek_id(body)?;
        self.decode_at(body, at)
    }

    /// Decodes a response of type `T` whose encoding id is `id`. A ServiceFault, or a response whose
    /// ServiceResult is bad, is [`Error::Remote`] with the server's status.
    pub fn decode_response<T: BinaryDecodable + HasServiceResult>(&self, id: ObjectId, body: &[u8]) -> Result<T> {
        let (got, at) = self.peek_id(body)?;
        if got == ObjectId::ServiceFault_Encoding_DefaultBinary {
            let fault: ServiceFault = self.decode_at(body, at)?;
            let status = fault.response_header.service_result;
            return Err(Error::Remote { status, reason: format!("ServiceFault instead of {}", service_name(id)) });
        }
        if got != id {
            return Err(Error::Decoding(format!("expected {id:?}, got {got:?}")));
        }
        let response: T = self.decode_at(body, at)?;
        let status = response.service_result();
        if status.is_bad() {
            return Err(Error::Remote { status, reason: format!("{} service result", service_name(id)) });
        }
        Ok(response)
    }
}

/// The service a response encoding id belongs to, for error messages: `ActivateSessionResponse_Encoding_DefaultBinary`
/// names ActivateSession.
fn service_name(id: ObjectId) -> String {
    let name = format!("{id:?}");
    match name.strip_suffix("Response_Encoding_DefaultBinary") {
        Some(service) => service.to_owned(),
        None => name,
    }
}

/// Responses carry their status in the ResponseHeader.
pub trait HasServiceResult {
    /// The ResponseHeader's ServiceResult.
    fn service_result(&self) -> opcua_types::StatusCode;
}

macro_rules! has_service_result {
    ($($t:ty),*) => {$(
        impl HasServiceResult for $t {
            fn service_result(&self) -> opcua_types::StatusCode {
                self.response_header.service_result
            }
        }
    )*};
}

has_service_result!(opcua_types::GetEndpointsResponse, opcua_types::FindServersResponse, ServiceFault);

// The responses the client's session and services decode.
has_service_result!(
    opcua_types::CreateSessionResponse,
    opcua_types::ActivateSessionResponse,
    opcua_types::CloseSessionResponse,
    opcua_types::ReadResponse,
    opcua_types::WriteResponse,
    opcua_types::BrowseResponse,
    opcua_types::BrowseNextResponse,
    opcua_types::TranslateBrowsePathsToNodeIdsResponse,
    opcua_types::CallResponse,
    opcua_types::RegisterNodesResponse,
    opcua_types::UnregisterNodesResponse,
    opcua_types::CreateSubscriptionResponse,
    opcua_types::ModifySubscriptionResponse,
    opcua_types::DeleteSubscriptionsResponse,
    opcua_types::CreateMonitoredItemsResponse,
    opcua_types::ModifyMonitoredItemsResponse,
    opcua_types::DeleteMonitoredItemsResponse,
    opcua_types::SetMonitoringModeResponse,
    opcua_types::SetPublishingModeResponse,
    opcua_types::PublishResponse,
    opcua_types::RepublishResponse,
    opcua_types::TransferSubscriptionsResponse
);

#[cfg(test)]
mod tests {
    use super::*;
    use opcua_types::GetEndpointsRequest;

    #[test]
    fn round_trip_and_faults() {
        let codec = BodyCodec::new();
        let request = GetEndpointsRequest {
            request_header: RequestHeader::new(&NodeId::null(), &DateTime::now(), 7),
            endpoint_url: "opc.tcp://h:1/".into(),
            locale_ids: None,
            profile_uris: None,
        };
        let body = codec.encode(ObjectId::GetEndpointsRequest_Encoding_DefaultBinary, &request).unwrap();
        let (id, at) = codec.peek_id(&body).unwrap();
        assert_eq!(id, ObjectId::GetEndpointsRequest_Encoding_DefaultBinary);
        let back: GetEndpointsRequest = codec.decode_at(&body, at).unwrap();
        assert_eq!(back.endpoint_url.as_ref(), "opc.tcp://h:1/");
        assert_eq!(codec.request_header(&body).unwrap().request_handle, 7);

        // The routing fields alone, from a header with a real token; a header cut short is a decoding error.
        let token = NodeId::new(1, opcua_types::Guid::new());
        let request = GetEndpointsRequest {
            request_header: RequestHeader::new(&token, &DateTime::now(), 0xDEAD_BEEF),
            ..request
        };
        let body = codec.encode(ObjectId::GetEndpointsRequest_Encoding_DefaultBinary, &request).unwrap();
        let (_, at) = codec.peek_id(&body).unwrap();
        assert_eq!(codec.route_at(&body, at).unwrap(), (token, 0xDEAD_BEEF));
        // Guid NodeId (1 + 2 + 16 bytes), timestamp (8), handle (4).
        for cut in at..at + 19 + 8 + 4 {
            assert!(codec.route_at(&body[..cut], at).is_err(), "header cut at {cut}");
        }

        let fault =
            ServiceFault { response_header: ResponseHeader::new_service_result(7, StatusCode::BadServiceUnsupported) };
        let body = codec.encode(ObjectId::ServiceFault_Encoding_DefaultBinary, &fault).unwrap();
        let err = codec
            .decode_response::<opcua_types::GetEndpointsResponse>(
                ObjectId::GetEndpointsResponse_Encoding_DefaultBinary,
                &body,
            )
            .unwrap_err();
        assert_eq!(err.status_code(), StatusCode::BadServiceUnsupported);
        // The message names the service that failed.
        assert!(err.to_string().contains("ServiceFault instead of GetEndpoints"), "{err}");
        assert!(codec.peek_id(b"\x01").is_err());
    }

    #[test]
    fn lists_longer_than_the_operation_limits_still_decode() {
        use opcua_types::{ReadRequest, ReadValueId, TimestampsToReturn};
        let codec = BodyCodec::new();
        let request = ReadRequest {
            request_header: RequestHeader::new(&NodeId::null(), &DateTime::now(), 9),
            max_age: 0.0,
            timestamps_to_return: TimestampsToReturn::Neither,
            nodes_to_read: Some(vec![ReadValueId::default(); 1001]),
        };
        let body = codec.encode(ObjectId::ReadRequest_Encoding_DefaultBinary, &request).unwrap();
        let (_, at) = codec.peek_id(&body).unwrap();
        let back: ReadRequest = codec.decode_at(&body, at).unwrap();
        assert_eq!(back.nodes_to_read.map(|n| n.len()), Some(1001), "the server answers BadTooManyOperations");
    }

    #[test]
    fn an_unsendable_response_becomes_a_fault_for_the_same_request() {
        use opcua_types::ReadResponse;
        let codec = BodyCodec::new();
        let response = ReadResponse {
            response_header: ResponseHeader::new_service_result(9, StatusCode::Good),
            results: None,
            diagnostic_infos: None,
        };
        let body = codec.encode(ObjectId::ReadResponse_Encoding_DefaultBinary, &response).unwrap();
        let fault = codec.fault_instead_of(&body, StatusCode::BadResponseTooLarge);
        let (id, at) = codec.peek_id(&fault).unwrap();
        assert_eq!(id, ObjectId::ServiceFault_Encoding_DefaultBinary);
        let fault: ServiceFault = codec.decode_at(&fault, at).unwrap();
        assert_eq!(fault.response_header.service_result, StatusCode::BadResponseTooLarge);
        assert_eq!(fault.response_header.request_handle, 9);
        // Garbage in place of a response still gives a fault (handle 0).
        assert!(!codec.fault_instead_of(b"\xff", StatusCode::BadResponseTooLarge).is_empty());
    }
}
