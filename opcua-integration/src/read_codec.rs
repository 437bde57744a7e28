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
        out.extend_from_slice(&self.request_handle.to_le_bytes());
        // returnDiagnostics: none.
        out.extend_from_slice(&0u32.to_le_bytes());
        // auditEntryId: a null String.
        out.extend_from_slice(&(-1i32).to_le_bytes());
        out.extend_from_slice(&self.timeout_hint.to_le_bytes());
        out.extend_from_slice(&NULL_EXTENSION_OBJECT);
        Ok(())
    }
}

/// A null ExtensionObject: the null NodeId (two-byte encoding, 0) and encoding byte 0 (no body).
const NULL_EXTENSION_OBJECT: [u8; 3] = [0, 0, 0];

/// The body of a ReadRequest (its encoding id, then the request) with `header`.
pub fn encode_read_request(
    codec: &BodyCodec,
    header: &RequestHeaderParts<'_>,
    max_age: f64,
    timestamps: TimestampsToReturn,
    nodes: &[ReadValueId],
) -> Result<Vec<u8>> {
    let ctx = codec.context();
    let count = i32::try_from(nodes.len())
        .map_err(|_| Error::EncodingLimitsExceeded(format!("a Read of {} nodes", nodes.len())))?;
    let mut out = Vec::with_capacity(96 + 32 * nodes.len());
    NodeId::from(ObjectId::ReadRequest_Encoding_DefaultBinary).encode(&mut out, &ctx)?;
    header.encode(codec, &mut out)?;
    out.extend_from_slice(&max_age.to_le_bytes());
    out.extend_from_slice(&(timestamps as i32).to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    for node in nodes {
        node.encode(&mut out, &ctx)?;
    }
    Ok(out)
}

/// The results of a plain Read response body (see the module documentation), or `None` for any other body: decode
/// that with [`BodyCodec::decode_response`].
pub fn decode_read_results(codec: &BodyCodec, body: &[u8]) -> Option<Vec<DataValue>> {
    let ctx = codec.context();
    let mut cursor = Cursor::new(body);
    if NodeId::decode(&mut cursor, &ctx).ok()? != ObjectId::ReadResponse_Encoding_DefaultBinary {
        return None;
    }
    // ResponseHeader: timestamp (not needed: the caller gets the results), requestHandle (the channel matched the
    // response by its request id), serviceResult, then empty diagnostics, string table and additional header.
    let mut fixed = [0u8; 8 + 4 + 4 + 1 + 4 + 3];
    std::io::Read::read_exact(&mut cursor, &mut fixed).ok()?;
    let service_result = StatusCode::from(u32::from_le_bytes(fixed[12..16].try_into().ok()?));
    let diagnostics = fixed[16];
    let string_table = i32::from_le_bytes(fixed[17..21].try_into().ok()?);
    if service_result.is_bad()
        || diagnostics != 0
        || !matches!(string_table, -1 | 0)
        || fixed[21..] != NULL_EXTENSION_OBJECT
    {
        return None;
    }
    let count = usize::try_from(i32::decode(&mut cursor, &ctx).ok()?).ok()?;
    if count > ctx.options().max_array_length {
        return None;
    }
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
}
