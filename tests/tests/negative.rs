//! Hostile and broken peers over real sockets: each connection is closed with the status the specification names
//! (in an Error message), and the same server keeps serving a well-behaved client afterwards.

use std::time::Duration;

use certvault_opcua::channel::asymmetric::PeerCertificate;
use certvault_opcua::channel::policy::{DeprecatedPolicies, SecurityMode, SecurityPolicy};
use certvault_opcua::channel::secure_channel::{ClientConfig, Event, Now, SecureChannel};
use certvault_opcua::server::Server;
use certvault_opcua::transport::uacp::{FrameDecoder, Limits, MessageType, Negotiated};
use certvault_tests::{
    expect_error_and_close, frames_until_close, identity, init_tracing, raw_connect, raw_hello, soft_key, PkiServer,
};
use opcua_types::StatusCode;
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
