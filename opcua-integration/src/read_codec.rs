//! The Read service's bodies and the request header, written and parsed directly instead of through the generic
//! `async-opcua-types` codec.
//!
//! Read is what clients send most (polling a machine is a loop of Reads), so its round trip is the one to keep short.
//! The generic path goes through `chrono` for every header timestamp: `DateTime::now`, then `checked_ticks` to
//! encode it (which rebuilds the year-1601 and year-9999 limits on every call), and `DateTime::from(ticks)` to decode
//! the response's. On the development VM that is about 0.4 µs of a Read's client-side work measured alone, and more in
//! the round trip, where the kernel's send and receive have evicted that code from the caches since the last Read.
//! Here a timestamp is 100 ns ticks computed from [`SystemTime`], and a response's header is checked field by field.
//!
//! Only the plain form is parsed here: a Read response with a good service result, no diagnostics, no string table
//! and no additional header. Anything else (a ServiceFault, a bad result, diagnostics) makes
//! [`decode_read_results`] return `None`, and the caller decodes the body with the generic codec, which produces the
//! same errors as every other service. The bytes written here equal those of the generic encoder; the tests compare
//! them.
//!
//! ```
//! use certvault_opcua::read_codec::{encode_read_request, now_ticks, RequestHeaderParts};
//! use certvault_opcua::service::BodyCodec;
//! use opcua_types::{NodeId, ReadValueId, TimestampsToReturn};
//!
//! let token = NodeId::new(0, 42u32);
//! let header = RequestHeaderParts { authentication_token: &token, timestamp: now_ticks(), request_handle: 7, timeout_hint: 10_000 };
//! let body = encode_read_request(BodyCodec::shared(), &header, 0.0, TimestampsToReturn::Neither, &[ReadValueId::from(&NodeId::new(2, "Setpoint"))])?;
//! assert!(!body.is_empty());
//! # Ok::<(), certvault_opcua::Error>(())
//! ```

use std::io::Cursor;
use std::time::{SystemTime, UNIX_EPOCH};

use opcua_types::{
    BinaryDecodable, BinaryEncodable, DataValue, DateTime, DiagnosticBits, ExtensionObject, NodeId, ObjectId,
    ReadValueId, RequestHeader, StatusCode, TimestampsToReturn, UAString,
};

use crate::error::{Error, Result};
use crate::service::BodyCodec;
use crate::wire;

/// OPC UA DateTime ticks (100 ns since 1601-01-01 UTC) of the Unix epoch.
pub const UNIX_EPOCH_TICKS: i64 = 116_444_736_000_000_000;

/// The last DateTime OPC UA represents as ticks (9999-12-31 23:59:59 UTC); later times encode as `i64::MAX` (Part 6
/// §5.2.2.5).
pub const ENDTIMES_TICKS: i64 = 2_650_467_743_990_000_000;

/// The DateTime ticks of `time`, clamped as Part 6 §5.2.2.5 asks: before 1601 is 0, after 9999 is `i64::MAX`.
pub fn ticks_of(time: SystemTime) -> i64 {
    // Whole ticks, rounded towards the past, as a DateTime made from the same time holds them.
    let since_unix: i128 = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i128::try_from(after.as_nanos()).unwrap_or(i128::MAX),
        Err(before) => i128::try_from(before.duration().as_nanos()).map_or(i128::MIN, |n| -n),
    };
    let ticks = since_unix.div_euclid(100).saturating_add(i128::from(UNIX_EPOCH_TICKS));
    if ticks < 0 {
        0
    } else if ticks > i128::from(ENDTIMES_TICKS) {
        i64::MAX
    } else {
        i64::try_from(ticks).unwrap_or(i64::MAX)
    }
}

/// The DateTime ticks of now.
pub fn now_ticks() -> i64 {
    ticks_of(SystemTime::now())
}

/// What a client puts in a RequestHeader (Part 4 §7.32): no diagnostics asked, no audit entry id, no additional
/// header.
#[derive(Clone, Copy, Debug)]
pub struct RequestHeaderParts<'a> {
    /// The session's authentication token (null before CreateSession).
    pub authentication_token: &'a NodeId,
    /// When the request was sent, in DateTime ticks ([`now_ticks`]).
    pub timestamp: i64,
    /// The client's handle for the request.
    pub request_handle: u32,
    /// How long the client waits, in milliseconds (0: no hint).
    pub timeout_hint: u32,
}

impl RequestHeaderParts<'_> {
    /// The header as the generic codec's type.
    pub fn to_header(&self) -> RequestHeader {
        RequestHeader {
            authentication_token: self.authentication_token.clone(),
            timestamp: DateTime::from(self.timestamp),
            request_handle: self.request_handle,
            return_diagnostics: DiagnosticBits::empty(),
            audit_entry_id: UAString::null(),
            timeout_hint: self.timeout_hint,
            additional_header: ExtensionObject::null(),
        }
    }

    /// Appends the encoded header to `out`.
    pub fn encode(&self, codec: &BodyCodec, out: &mut Vec<u8>) -> Result<()> {
        self.authentication_token.encode(out, &codec.context())?;
        out.extend_from_slice(&self.timestamp.to_le_bytes());
        wire::put_u32(out, self.request_handle);
        // returnDiagnostics: none.
        wire::put_u32(out, 0);
        // auditEntryId: a null String.
        wire::put_i32(out, -1);
        wire::put_u32(out, self.timeout_hint);
        out.extend_from_slice(&NULL_EXTENSION_OBJECT);
        Ok(())
    }
}

/// A null ExtensionObject: the null NodeId (two-byte encoding, 0) and encoding byte 0 (no body).
const NULL_EXTENSION_OBJECT: [u8; 3] = [0, 0, 0];

/// A body buffer of `capacity` bytes that starts with the encoding id `id`, and the Int32 length field of the
/// body's array of `len` elements.
fn start_body(codec: &BodyCodec, id: ObjectId, len: usize, capacity: usize) -> Result<(Vec<u8>, i32)> {
    let count = i32::try_from(len)
        .map_err(|_| Error::EncodingLimitsExceeded(format!("an array of {len} elements in {id:?}")))?;
    let mut out = Vec::with_capacity(capacity);
    NodeId::from(id).encode(&mut out, &codec.context())?;
    Ok((out, count))
}

/// The body of a ReadRequest (its encoding id, then the request) with `header`.
pub fn encode_read_request(
    codec: &BodyCodec,
    header: &RequestHeaderParts<'_>,
    max_age: f64,
    timestamps: TimestampsToReturn,
    nodes: &[ReadValueId],
) -> Result<Vec<u8>> {
    let ctx = codec.context();
    let id = ObjectId::ReadRequest_Encoding_DefaultBinary;
    let (mut out, count) = start_body(codec, id, nodes.len(), 96 + 32 * nodes.len())?;
    header.encode(codec, &mut out)?;
    out.extend_from_slice(&max_age.to_le_bytes());
    wire::put_i32(&mut out, timestamps as i32);
    wire::put_i32(&mut out, count);
    for node in nodes {
        node.encode(&mut out, &ctx)?;
    }
    Ok(out)
}

/// The results of a plain Read response body (see the module documentation), or `None` for any other body: decode
/// that with [`BodyCodec::decode_response`].
pub fn decode_read_results(codec: &BodyCodec, body: &[u8]) -> Option<Vec<DataValue>> {
    let ctx = codec.context();
    let (id, at) = codec.peek_node(body).ok()?;
    if id != ObjectId::ReadResponse_Encoding_DefaultBinary {
        return None;
    }
    // ResponseHeader: timestamp (not needed: the caller gets the results), requestHandle (the channel matched the
    // response by its request id), serviceResult, then empty diagnostics, string table and additional header.
    let mut r = wire::Reader::new(body.get(at..)?);
    let _timestamp = r.bytes(8, "timestamp").ok()?;
    let _request_handle = r.u32("requestHandle").ok()?;
    let service_result = StatusCode::from(r.u32("serviceResult").ok()?);
    let diagnostics = r.u8("serviceDiagnostics").ok()?;
    let string_table = r.i32("stringTable").ok()?;
    let additional_header = r.bytes(3, "additionalHeader").ok()?;
    if service_result.is_bad()
        || diagnostics != 0
        || !matches!(string_table, -1 | 0)
        || additional_header != NULL_EXTENSION_OBJECT
    {
        return None;
    }
    let count = usize::try_from(r.i32("results").ok()?).ok()?;
    if count > ctx.options().max_array_length {
        return None;
    }
    let mut cursor = Cursor::new(r.rest());
    let mut results = Vec::with_capacity(count);
    for _ in 0..count {
        results.push(DataValue::decode(&mut cursor, &ctx).ok()?);
    }
    // diagnosticInfos: none (the request asked for none).
    if !matches!(i32::decode(&mut cursor, &ctx).ok()?, -1 | 0) {
        return None;
    }
    Some(results)
}

/// The parts of a ReadRequest a server needs, parsed by [`decode_read_request`].
#[derive(Clone, Debug, PartialEq)]
pub struct ReadArgs {
    /// The client's handle, for the response.
    pub request_handle: u32,
    /// maxAge in milliseconds.
    pub max_age: f64,
    /// Which timestamps to return.
    pub timestamps: TimestampsToReturn,
    /// The attributes to read (`None`: a null array).
    pub nodes: Option<Vec<ReadValueId>>,
}

/// The arguments of a plain ReadRequest whose structure starts at `at` in `body` (after the encoding id), or `None`
/// for anything unusual (diagnostics asked, an audit entry id, an additional header, an unknown TimestampsToReturn,
/// a malformed or truncated body): decode that with the generic codec, which also gives the right error.
///
/// The authentication token is skipped: the server has routed the request by it already
/// ([`BodyCodec::route_at`]). The request's timestamp is for the server's diagnostics only (Part 4 §7.32) and is not
/// converted.
pub fn decode_read_request(codec: &BodyCodec, body: &[u8], at: usize) -> Option<ReadArgs> {
    let ctx = codec.context();
    let mut r = wire::Reader::new(body.get(at..)?);
    skip_node_id(&mut r)?;
    let _timestamp = r.bytes(8, "timestamp").ok()?;
    let request_handle = r.u32("requestHandle").ok()?;
    let return_diagnostics = r.u32("returnDiagnostics").ok()?;
    let audit_entry_id = r.i32("auditEntryId").ok()?;
    let _timeout_hint = r.u32("timeoutHint").ok()?;
    let additional_header = r.bytes(3, "additionalHeader").ok()?;
    if return_diagnostics != 0 || !matches!(audit_entry_id, -1 | 0) || additional_header != NULL_EXTENSION_OBJECT {
        return None;
    }
    let max_age = f64::from_le_bytes(r.array("maxAge").ok()?);
    let timestamps = match r.i32("timestampsToReturn").ok()? {
        0 => TimestampsToReturn::Source,
        1 => TimestampsToReturn::Server,
        2 => TimestampsToReturn::Both,
        3 => TimestampsToReturn::Neither,
        _ => return None,
    };
    let nodes = match r.i32("nodesToRead").ok()? {
        -1 => None,
        count => {
            let count = usize::try_from(count).ok().filter(|&n| n <= ctx.options().max_array_length)?;
            let mut cursor = Cursor::new(r.rest());
            let mut nodes = Vec::with_capacity(count);
            for _ in 0..count {
                nodes.push(ReadValueId::decode(&mut cursor, &ctx).ok()?);
            }
            Some(nodes)
        }
    };
    Some(ReadArgs { request_handle, max_age, timestamps, nodes })
}

/// Moves past a NodeId in one of the six encodings of Part 6 §5.2.2.9; `None` for anything else (an expanded
/// NodeId's flags have no place in a RequestHeader).
fn skip_node_id(r: &mut wire::Reader<'_>) -> Option<()> {
    let what = "authenticationToken";
    let len = match r.u8(what).ok()? {
        0x00 => 1,
        0x01 => 3,
        0x02 => 6,
        0x04 => 2 + 16,
        // String and ByteString identifiers: namespace, then a length-prefixed body (null: -1).
        0x03 | 0x05 => {
            r.bytes(2, what).ok()?;
            let n = r.i32(what).ok()?;
            usize::try_from(n).unwrap_or(0)
        }
        _ => return None,
    };
    r.bytes(len, what).ok().map(|_| ())
}

/// The body of a ReadResponse (its encoding id, then the response) with a good service result and `results`,
/// stamped `timestamp` (DateTime ticks) and answering `request_handle`.
pub fn encode_read_response(
    codec: &BodyCodec,
    timestamp: i64,
    request_handle: u32,
    results: &[DataValue],
) -> Result<Vec<u8>> {
    let ctx = codec.context();
    let id = ObjectId::ReadResponse_Encoding_DefaultBinary;
    let (mut out, count) = start_body(codec, id, results.len(), 64 + 16 * results.len())?;
    out.extend_from_slice(&timestamp.to_le_bytes());
    wire::put_u32(&mut out, request_handle);
    wire::put_u32(&mut out, StatusCode::Good.bits());
    // serviceDiagnostics: empty; stringTable: null; additionalHeader: null.
    out.push(0);
    wire::put_i32(&mut out, -1);
    out.extend_from_slice(&NULL_EXTENSION_OBJECT);
    wire::put_i32(&mut out, count);
    for value in results {
        value.encode(&mut out, &ctx)?;
    }
    // diagnosticInfos: null.
    wire::put_i32(&mut out, -1);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opcua_types::{ByteString, DiagnosticInfo, ReadRequest, ReadResponse, ResponseHeader, Variant};

    #[test]
    fn ticks_match_the_generic_date_time() {
        let day = std::time::Duration::from_secs(86_400);
        let times = [
            SystemTime::now(),
            UNIX_EPOCH,
            UNIX_EPOCH + std::time::Duration::from_nanos(1_234_567_891),
            UNIX_EPOCH - std::time::Duration::from_nanos(1_234_567_891),
            UNIX_EPOCH - day * 365 * 300,
            UNIX_EPOCH - day * 365 * 400,
            UNIX_EPOCH + day * 365 * 9000,
        ];
        for time in times {
            let utc: opcua_types::DateTimeUtc = time.into();
            assert_eq!(ticks_of(time), DateTime::from(utc).checked_ticks(), "{utc}");
        }
        assert_eq!(ENDTIMES_TICKS, DateTime::endtimes_ticks());
        // A driver's clock reading carries both forms of the same wall-clock time.
        let now = crate::channel::secure_channel::Now::system();
        assert_eq!(now.utc.checked_ticks(), now.ticks());
        assert_eq!(UNIX_EPOCH_TICKS, DateTime::from(opcua_types::DateTimeUtc::from(UNIX_EPOCH)).ticks());
    }

    fn generic_request(header: &RequestHeaderParts<'_>, nodes: Vec<ReadValueId>) -> Vec<u8> {
        let request = ReadRequest {
            request_header: header.to_header(),
            max_age: 250.0,
            timestamps_to_return: TimestampsToReturn::Both,
            nodes_to_read: Some(nodes),
        };
        BodyCodec::shared().encode(ObjectId::ReadRequest_Encoding_DefaultBinary, &request).unwrap()
    }

    #[test]
    fn read_requests_are_byte_equal_to_the_generic_encoding() {
        let codec = BodyCodec::shared();
        let tokens = [NodeId::null(), NodeId::new(0, 7u32), NodeId::new(1, ByteString::from(vec![9u8; 32]))];
        let node_sets = [
            vec![],
            vec![ReadValueId::from(&NodeId::new(2, "Machine.Setpoint"))],
            (0..50).map(|i| ReadValueId::from(&NodeId::new(3, i as u32))).collect::<Vec<_>>(),
        ];
        for token in &tokens {
            for nodes in &node_sets {
                let header = RequestHeaderParts {
                    authentication_token: token,
                    timestamp: now_ticks(),
                    request_handle: 0xDEAD_BEEF,
                    timeout_hint: 12_345,
                };
                let ours = encode_read_request(codec, &header, 250.0, TimestampsToReturn::Both, nodes).expect("encode");
                assert_eq!(ours, generic_request(&header, nodes.clone()), "token {token}, {} nodes", nodes.len());
            }
        }
    }

    fn response(header: ResponseHeader, results: Option<Vec<DataValue>>) -> Vec<u8> {
        let response = ReadResponse { response_header: header, results, diagnostic_infos: None };
        BodyCodec::shared().encode(ObjectId::ReadResponse_Encoding_DefaultBinary, &response).unwrap()
    }

    #[test]
    fn plain_read_responses_decode_like_the_generic_codec() {
        let codec = BodyCodec::shared();
        let values = vec![
            DataValue::value_only(Variant::Double(21.5)),
            DataValue::new_now(Variant::from("text")),
            DataValue { status: Some(StatusCode::BadNodeIdUnknown), ..DataValue::null() },
            DataValue::value_only(Variant::ByteString(ByteString::from(vec![1u8; 3000]))),
        ];
        let header = ResponseHeader::new_timestamped_service_result(DateTime::now(), 5, StatusCode::Good);
        for results in [Some(values.clone()), Some(vec![])] {
            let body = response(header.clone(), results.clone());
            let generic: ReadResponse =
                codec.decode_response(ObjectId::ReadResponse_Encoding_DefaultBinary, &body).expect("generic");
            let ours = decode_read_results(codec, &body).expect("a plain response");
            assert_eq!(Some(ours), generic.results);
        }
    }

    #[test]
    fn anything_but_a_plain_response_is_left_to_the_generic_codec() {
        let codec = BodyCodec::shared();
        let good = ResponseHeader::new_timestamped_service_result(DateTime::now(), 5, StatusCode::Good);
        let results = Some(vec![DataValue::value_only(Variant::Int32(1))]);
        let bad = ResponseHeader::new_timestamped_service_result(DateTime::now(), 5, StatusCode::BadTooManyOperations);
        let mut with_strings = good.clone();
        with_strings.string_table = Some(vec!["x".into()]);
        let mut with_diagnostics = good.clone();
        with_diagnostics.service_diagnostics = DiagnosticInfo { symbolic_id: Some(1), ..DiagnosticInfo::null() };
        for header in [bad, with_strings, with_diagnostics] {
            assert!(decode_read_results(codec, &response(header, results.clone())).is_none());
        }
        // No results at all (null array): the generic path's count check reports it.
        assert!(decode_read_results(codec, &response(good.clone(), None)).is_none());
        // A ServiceFault, a Write response, and every truncation of a plain response.
        let fault = codec.fault_instead_of(&response(good.clone(), results.clone()), StatusCode::BadTimeout);
        assert!(decode_read_results(codec, &fault).is_none());
        let write = opcua_types::WriteResponse { response_header: good.clone(), results: None, diagnostic_infos: None };
        let write = codec.encode(ObjectId::WriteResponse_Encoding_DefaultBinary, &write).unwrap();
        assert!(decode_read_results(codec, &write).is_none());
        let plain = response(good, results);
        assert!(decode_read_results(codec, &plain).is_some());
        for end in 0..plain.len() {
            assert!(decode_read_results(codec, &plain[..end]).is_none(), "truncated at {end}");
        }
    }

    #[test]
    fn a_huge_result_count_is_refused_before_anything_is_reserved() {
        let codec = BodyCodec::shared();
        let good = ResponseHeader::new_timestamped_service_result(DateTime::now(), 5, StatusCode::Good);
        let mut body = response(good, Some(vec![]));
        // The results count sits right before the (empty) diagnostics array at the end.
        let at = body.len() - 8;
        body[at..at + 4].copy_from_slice(&i32::MAX.to_le_bytes());
        assert!(decode_read_results(codec, &body).is_none());
    }

    #[test]
    fn read_requests_parse_like_the_generic_codec_and_unusual_ones_are_left_to_it() {
        let codec = BodyCodec::shared();
        let tokens = [NodeId::null(), NodeId::new(0, 300u32), NodeId::new(1, 70_000u32), NodeId::new(4, "session")];
        let tokens = tokens
            .into_iter()
            .chain([NodeId::new(1, ByteString::from(vec![9u8; 32])), NodeId::new(1, opcua_types::Guid::new())]);
        for token in tokens {
            let header = RequestHeaderParts {
                authentication_token: &token,
                timestamp: now_ticks(),
                request_handle: 77,
                timeout_hint: 0,
            };
            let mut index = ReadValueId::from(&NodeId::new(2, "Array"));
            index.index_range = "1:3".parse().unwrap();
            let nodes = vec![ReadValueId::from(&NodeId::new(2, "Setpoint")), index];
            let body = generic_request(&header, nodes.clone());
            let (_, at) = codec.peek_id(&body).unwrap();
            let generic: ReadRequest = codec.decode_at(&body, at).unwrap();
            let ours = decode_read_request(codec, &body, at).expect("a plain request");
            assert_eq!(ours.request_handle, generic.request_header.request_handle);
            assert_eq!(ours.max_age, generic.max_age);
            assert_eq!(ours.timestamps, generic.timestamps_to_return);
            assert_eq!(ours.nodes, generic.nodes_to_read, "token {token}");
            for end in at..body.len() {
                assert!(decode_read_request(codec, &body[..end], at).is_none(), "truncated at {end}");
            }
        }
        let token = NodeId::null();
        let header =
            RequestHeaderParts { authentication_token: &token, timestamp: 0, request_handle: 1, timeout_hint: 0 };
        let plain = ReadRequest {
            request_header: header.to_header(),
            max_age: 0.0,
            timestamps_to_return: TimestampsToReturn::Neither,
            nodes_to_read: None,
        };
        let mut with_diagnostics = plain.clone();
        with_diagnostics.request_header.return_diagnostics = DiagnosticBits::SERVICE_LEVEL_SYMBOLIC_ID;
        let mut with_audit = plain.clone();
        with_audit.request_header.audit_entry_id = "audit".into();
        let mut with_header = plain.clone();
        with_header.request_header.additional_header = ExtensionObject::from_message(opcua_types::Argument::default());
        for request in [with_diagnostics, with_audit, with_header] {
            let body = codec.encode(ObjectId::ReadRequest_Encoding_DefaultBinary, &request).unwrap();
            assert!(decode_read_request(codec, &body, 4).is_none(), "{:?}", request.request_header);
        }
        let body = codec.encode(ObjectId::ReadRequest_Encoding_DefaultBinary, &plain).unwrap();
        assert_eq!(decode_read_request(codec, &body, 4).expect("plain").nodes, None, "a null array stays null");
        // TimestampsToReturn 4 does not exist; a count over the array limit is refused before reserving.
        let ttr_at = body.len() - 8;
        let mut unknown = body.clone();
        unknown[ttr_at..ttr_at + 4].copy_from_slice(&4i32.to_le_bytes());
        assert!(decode_read_request(codec, &unknown, 4).is_none());
        let mut huge = body.clone();
        huge[ttr_at + 4..].copy_from_slice(&i32::MAX.to_le_bytes());
        assert!(decode_read_request(codec, &huge, 4).is_none());
    }

    #[test]
    fn read_responses_are_byte_equal_to_the_generic_encoding() {
        let codec = BodyCodec::shared();
        let now = DateTime::now();
        for results in [
            vec![],
            vec![DataValue::value_only(Variant::Double(1.5))],
            vec![
                DataValue::new_now(Variant::from("x")),
                DataValue { status: Some(StatusCode::BadNotReadable), ..DataValue::null() },
            ],
        ] {
            let ours = encode_read_response(codec, now.checked_ticks(), 9, &results).unwrap();
            let header = ResponseHeader::new_timestamped_service_result(now, 9, StatusCode::Good);
            assert_eq!(ours, response(header, Some(results.clone())), "{} results", results.len());
        }
    }
}
