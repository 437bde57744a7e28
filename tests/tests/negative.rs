//! Hostile and broken peers over real sockets: each connection is closed with the status the specification names
//! (in an Error message), and the same server keeps serving a well-behaved client afterwards. The server judges
//! client certificates with its PKI store; the cases that need what a correct client never sends (bad padding under
//! a correct MAC, too many chunks, a renewal by another certificate) drive a channel by hand with the crate's public
//! sans-IO pieces ([`certvault_tests::HandChannel`]).

use std::time::Duration;

use certvault_opcua::channel::asymmetric::PeerCertificate;
use certvault_opcua::channel::policy::{DeprecatedPolicies, SecurityMode, SecurityPolicy};
use certvault_opcua::channel::secure_channel::{ClientConfig, Event, Now, SecureChannel};
use certvault_opcua::server::Server;
use certvault_opcua::service::BodyCodec;
use certvault_opcua::transport::uacp::{ChunkType, FrameDecoder, Limits, MessageType, Negotiated, UacpMessage};
use certvault_tests::{
    expect_error_and_close, frames_until_close, identity, init_tracing, raw_connect, raw_hello, read_frame, soft_key,
    HandChannel, PkiServer,
};
use opcua_types::{
    DateTime, GetEndpointsRequest, NodeId, ObjectId, RequestHeader, SecurityTokenRequestType, StatusCode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server (client certificates judged by its PKI store) and its certificate.
async fn server() -> (PkiServer, Vec<u8>) {
    let server = PkiServer::start(Limits::default()).await;
    let cert = server.certificate.clone();
    (server, cert)
}

async fn still_serving(server: &PkiServer, _cert: &[u8]) {
    server.assert_still_serving().await;
}

async fn raw(server: &Server) -> TcpStream {
    raw_connect(server).await
}

async fn hello(stream: &mut TcpStream, server: &Server) -> Negotiated {
    raw_hello(stream, server, Limits::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_before_hello_is_refused() {
    init_tracing();
    let (server, cert) = server().await;
    let mut s = raw(&server).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    expect_error_and_close(&mut s, StatusCode::BadTcpMessageTypeInvalid).await;
    still_serving(&server, &cert).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_message_before_hello_is_refused() {
    init_tracing();
    let (server, cert) = server().await;
    let mut s = raw(&server).await;
    let mut msg = b"MSGF\x18\0\0\0".to_vec();
    msg.extend_from_slice(&[1u8; 16]);
    s.write_all(&msg).await.expect("write");
    expect_error_and_close(&mut s, StatusCode::BadTcpMessageTypeInvalid).await;
    still_serving(&server, &cert).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_message_size_is_refused_before_anything_is_buffered() {
    init_tracing();
    let (server, cert) = server().await;
    let mut s = raw(&server).await;
    s.write_all(b"HELF\xff\xff\xff\x7f").await.expect("write");
    expect_error_and_close(&mut s, StatusCode::BadTcpMessageTooLarge).await;
    // Also after the Hello.
    let mut s = raw(&server).await;
    hello(&mut s, &server).await;
    s.write_all(b"OPNF\xff\xff\xff\x7f").await.expect("write");
    expect_error_and_close(&mut s, StatusCode::BadTcpMessageTooLarge).await;
    still_serving(&server, &cert).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_endpoint_url_is_refused() {
    init_tracing();
    let (server, cert) = server().await;
    let mut s = raw(&server).await;
    let url = format!("{}nowhere", server.endpoint_url());
    s.write_all(&Limits::default().hello(&url).expect("hello").encode().expect("encode")).await.expect("write");
    expect_error_and_close(&mut s, StatusCode::BadTcpEndpointUrlInvalid).await;
    still_serving(&server, &cert).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_policy_uri_in_open_secure_channel_is_refused() {
    init_tracing();
    let (server, cert) = server().await;
    let mut s = raw(&server).await;
    hello(&mut s, &server).await;
    let uri = b"http://opcfoundation.org/UA/SecurityPolicy#Rot13";
    let mut body = Vec::new();
    body.extend_from_slice(&0u32.to_le_bytes()); // SecureChannelId
    body.extend_from_slice(&(uri.len() as i32).to_le_bytes());
    body.extend_from_slice(uri);
    body.extend_from_slice(&(-1i32).to_le_bytes()); // SenderCertificate
    body.extend_from_slice(&(-1i32).to_le_bytes()); // ReceiverCertificateThumbprint
    body.extend_from_slice(&1u32.to_le_bytes()); // SequenceNumber
    body.extend_from_slice(&1u32.to_le_bytes()); // RequestId
    body.extend_from_slice(&[0u8; 16]);
    let mut chunk = b"OPNF".to_vec();
    chunk.extend_from_slice(&((body.len() + 8) as u32).to_le_bytes());
    chunk.extend_from_slice(&body);
    s.write_all(&chunk).await.expect("write");
    expect_error_and_close(&mut s, StatusCode::BadSecurityPolicyRejected).await;
    still_serving(&server, &cert).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_signature_closes_the_channel() {
    init_tracing();
    let (server, cert) = server().await;
    let mut s = raw(&server).await;
    let negotiated = hello(&mut s, &server).await;
    // A real channel in Sign mode, driven by hand so a signed message can be tampered with on its way out.
    let mut channel = SecureChannel::client(
        ClientConfig {
            policy: SecurityPolicy::Basic256Sha256,
            mode: SecurityMode::Sign,
            // A trusted client that misbehaves after the channel is open.
            identity: Some(server.good_client.clone()),
            server_certificate: Some(PeerCertificate::from_der(&cert).expect("cert")),
            requested_lifetime_ms: 60_000,
            deprecated: DeprecatedPolicies::Reject,
        },
        negotiated,
    )
    .expect("client channel");
    channel.open(Now::system()).expect("open");
    s.write_all(&channel.poll_transmit().expect("OPN")).await.expect("write");
    let mut decoder = FrameDecoder::new(65535);
    let mut buf = vec![0u8; 65536];
    while !channel.is_open() {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before the OpenSecureChannel response");
        decoder.push(&buf[..n]);
        while let Some(frame) = decoder.next_frame().expect("frame") {
            assert_eq!(frame.header.message_type, MessageType::OpenSecureChannel);
            channel.handle_frame(&frame.bytes, Now::system()).expect("OPN response");
        }
    }
    assert!(matches!(channel.poll_event(), Some(Event::Opened { .. })));
    channel.send_request(b"\x01\x00\xac\x01 a request whose signature will not match").expect("request");
    let mut chunk = channel.poll_transmit().expect("MSG");
    // Sign mode: the body is in clear, so changing one byte of it breaks only the HMAC.
    let at = chunk.len() - 40;
    chunk[at] ^= 0x01;
    s.write_all(&chunk).await.expect("write");
    expect_error_and_close(&mut s, StatusCode::BadSecurityChecksFailed).await;
    still_serving(&server, &cert).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_dropped_after_the_hello_timeout() {
    init_tracing();
    let (server, cert) = server().await;
    let mut s = raw(&server).await;
    let started = std::time::Instant::now();
    let frames = frames_until_close(&mut s).await;
    assert!(frames.is_empty(), "no message for a peer that never spoke");
    assert!(started.elapsed() < Duration::from_secs(5), "dropped after the 300 ms hello timeout");
    still_serving(&server, &cert).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.live_connections(), 0, "every connection released its channel id");
}

/// An encoded GetEndpoints request, the body of the MSG chunks below.
fn get_endpoints_body(server: &Server) -> Vec<u8> {
    let request = GetEndpointsRequest {
        request_header: RequestHeader::new(&NodeId::null(), &DateTime::now(), 1),
        endpoint_url: server.endpoint_url().into(),
        locale_ids: None,
        profile_uris: None,
    };
    BodyCodec::new().encode(ObjectId::GetEndpointsRequest_Encoding_DefaultBinary, &request).expect("encode")
}

async fn open_by_hand(server: &PkiServer, mode: SecurityMode) -> HandChannel {
    HandChannel::open(server, &server.certificate, SecurityPolicy::Basic256Sha256, mode, &server.good_client).await
}

/// Reads the server's answer and checks it is a MSG (the request was accepted).
async fn expect_message(stream: &mut TcpStream) {
    let frame = read_frame(stream).await.expect("a response");
    assert_eq!(&frame[..3], b"MSG", "expected a response, got {:?}", UacpMessage::decode(&frame));
}

fn set_message_size(chunk: &mut [u8]) {
    let size = chunk.len() as u32;
    chunk[4..8].copy_from_slice(&size.to_le_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_chunks_close_the_channel() {
    init_tracing();
    let (server, cert) = server().await;
    // An OpenSecureChannel cut inside its security header, its MessageSize saying so: nothing to decode.
    let mut s = raw(&server).await;
    hello(&mut s, &server).await;
    let uri = SecurityPolicy::Basic256Sha256.uri().as_bytes();
    let mut cut = b"OPNF\0\0\0\0\0\0\0\0".to_vec();
    cut.extend_from_slice(&(uri.len() as i32).to_le_bytes());
    cut.extend_from_slice(&uri[..14]);
    set_message_size(&mut cut);
    s.write_all(&cut).await.expect("write");
    expect_error_and_close(&mut s, StatusCode::BadDecodingError).await;

    // A MSG of an open SignAndEncrypt channel missing its last AES block: the MAC cannot match.
    let mut h = open_by_hand(&server, SecurityMode::SignAndEncrypt).await;
    let body = get_endpoints_body(&server);
    let request_id = h.next_request();
    let whole = h.msg_chunk(ChunkType::Final, request_id, &body);
    h.stream.write_all(&whole).await.expect("write");
    expect_message(&mut h.stream).await;
    let request_id = h.next_request();
    let mut cut = h.msg_chunk(ChunkType::Final, request_id, &body);
    cut.truncate(cut.len() - 16);
    set_message_size(&mut cut);
    h.stream.write_all(&cut).await.expect("write");
    expect_error_and_close(&mut h.stream, StatusCode::BadSecurityChecksFailed).await;
    still_serving(&server, &cert).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_chunks_than_the_negotiated_max_chunk_count_close_the_channel() {
    init_tracing();
    let server = PkiServer::start(Limits { max_chunk_count: 4, ..Limits::default() }).await;
    let mut h = open_by_hand(&server, SecurityMode::Sign).await;
    assert_eq!(h.negotiated.max_send_chunk_count, 4, "the server announced its MaxChunkCount");
    let body = get_endpoints_body(&server);
    // Four chunks are allowed: a message split in four is answered.
    let request_id = h.next_request();
    let pieces: Vec<&[u8]> = body.chunks(body.len().div_ceil(4)).collect();
    assert_eq!(pieces.len(), 4);
    for (i, piece) in pieces.iter().enumerate() {
        let kind = if i == 3 { ChunkType::Final } else { ChunkType::Intermediate };
        let chunk = h.msg_chunk(kind, request_id, piece);
        h.stream.write_all(&chunk).await.expect("write");
    }
    expect_message(&mut h.stream).await;
    // A fifth chunk of one message is over the limit, whatever follows.
    let request_id = h.next_request();
    for _ in 0..5 {
        let chunk = h.msg_chunk(ChunkType::Intermediate, request_id, b"more");
        h.stream.write_all(&chunk).await.expect("write");
    }
    expect_error_and_close(&mut h.stream, StatusCode::BadTcpMessageTooLarge).await;
    server.assert_still_serving().await;
}

/// A SignAndEncrypt MSG chunk sealed by hand with the channel's client keys; with `corrupt`, one padding byte
/// differs from PaddingSize, and the MAC is computed over the corrupt padding so only the padding check can fail.
fn hand_sealed(h: &mut HandChannel, request_id: u32, body: &[u8], corrupt: bool) -> Vec<u8> {
    use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_256};
    use aws_lc_rs::hmac;
    use aws_lc_rs::iv::FixedLength;

    const MAC_LEN: usize = 32;
    let sequence_number = h.next_sequence();
    let keys = &h.keys.client;
    // Sequence header + body + padding (PaddingSize and its fill) + MAC must be whole AES blocks; take at least 16
    // fill bytes so there is something to corrupt.
    let unpadded = 8 + body.len() + 1 + MAC_LEN;
    let fill = (16 - unpadded % 16) % 16 + 16;
    let size = 16 + unpadded + fill;
    let mut chunk = b"MSGF".to_vec();
    chunk.extend_from_slice(&(size as u32).to_le_bytes());
    chunk.extend_from_slice(&h.channel_id.to_le_bytes());
    chunk.extend_from_slice(&h.token_id.to_le_bytes());
    chunk.extend_from_slice(&sequence_number.to_le_bytes());
    chunk.extend_from_slice(&request_id.to_le_bytes());
    chunk.extend_from_slice(body);
    let padding_start = chunk.len();
    chunk.extend(std::iter::repeat_n(fill as u8, fill + 1));
    if corrupt {
        chunk[padding_start + fill / 2] ^= 0x01;
    }
    let mac = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, keys.signing_key()), &chunk);
    chunk.extend_from_slice(mac.as_ref());
    assert_eq!(chunk.len(), size);
    let key = EncryptingKey::cbc(UnboundCipherKey::new(&AES_256, keys.encrypting_key()).expect("key")).expect("cbc");
    let iv: [u8; 16] = keys.iv().try_into().expect("iv");
    key.less_safe_encrypt(&mut chunk[16..], EncryptionContext::Iv128(FixedLength::from(iv))).expect("encrypt");
    chunk
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_padding_under_a_correct_mac_closes_the_channel() {
    init_tracing();
    let (server, cert) = server().await;
    let mut h = open_by_hand(&server, SecurityMode::SignAndEncrypt).await;
    let body = get_endpoints_body(&server);
    // The hand-made sealing is right: with consistent padding the request is answered.
    let request_id = h.next_request();
    let good = hand_sealed(&mut h, request_id, &body, false);
    h.stream.write_all(&good).await.expect("write");
    expect_message(&mut h.stream).await;
    let request_id = h.next_request();
    let bad = hand_sealed(&mut h, request_id, &body, true);
    h.stream.write_all(&bad).await.expect("write");
    expect_error_and_close(&mut h.stream, StatusCode::BadSecurityChecksFailed).await;
    still_serving(&server, &cert).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_secure_channel_for_another_receiver_certificate_is_refused() {
    init_tracing();
    let (server, cert) = server().await;
    let mut s = raw(&server).await;
    let negotiated = hello(&mut s, &server).await;
    // Encrypted to, and naming the thumbprint of, a certificate that is not the server's.
    let elsewhere = identity(soft_key(2048, "elsewhere"), "elsewhere", "urn:certvault:test:elsewhere");
    let mut channel = SecureChannel::client(
        ClientConfig {
            policy: SecurityPolicy::Basic256Sha256,
            mode: SecurityMode::SignAndEncrypt,
            identity: Some(server.good_client.clone()),
            server_certificate: Some(PeerCertificate::from_der(elsewhere.certificate()).expect("cert")),
            requested_lifetime_ms: 60_000,
            deprecated: DeprecatedPolicies::Reject,
        },
        negotiated,
    )
    .expect("client channel");
    channel.open(Now::system()).expect("open");
    s.write_all(&channel.poll_transmit().expect("OPN")).await.expect("write");
    expect_error_and_close(&mut s, StatusCode::BadCertificateInvalid).await;
    still_serving(&server, &cert).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_signed_with_another_certificate_closes_the_channel() {
    init_tracing();
    let (server, cert) = server().await;
    let mut h = open_by_hand(&server, SecurityMode::SignAndEncrypt).await;
    // A renewal by the channel's own certificate is answered with a new token.
    let good_client = server.good_client.clone();
    h.send_open(&good_client, SecurityTokenRequestType::Renew).await;
    let frame = read_frame(&mut h.stream).await.expect("renew response");
    assert_eq!(&frame[..3], b"OPN");
    // The same channel, renewed by another (even a trusted) certificate: refused.
    let other = identity(soft_key(2048, "other"), "other", "urn:certvault:test:other");
    server.pki.trust(other.certificate()).expect("trust");
    h.send_open(&other, SecurityTokenRequestType::Renew).await;
    expect_error_and_close(&mut h.stream, StatusCode::BadSecurityChecksFailed).await;
    still_serving(&server, &cert).await;
}
