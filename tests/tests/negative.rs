//! Hostile and broken peers over real sockets: each connection is closed with the status the specification names
//! (in an Error message), and the same server keeps serving a well-behaved client afterwards.

use std::time::Duration;

use certvault_opcua::channel::asymmetric::PeerCertificate;
use certvault_opcua::channel::policy::{DeprecatedPolicies, SecurityMode, SecurityPolicy};
use certvault_opcua::channel::secure_channel::{ClientConfig, Event, Now, SecureChannel};
use certvault_opcua::server::{Server, ServerBuilder};
use certvault_opcua::transport::uacp::{ErrorMessage, FrameDecoder, Limits, MessageType, UacpMessage};
use certvault_tests::{identity, init_tracing, soft_key, STEP_TIMEOUT};
use opcua_types::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn server() -> (Server, Vec<u8>) {
    let key = soft_key(2048, "server");
    let cert = certvault_tests::self_signed(&key, "server", "urn:certvault:test:server");
    let server = ServerBuilder::new("opc.tcp://127.0.0.1:0/")
        .identity(key, cert.clone())
        .expect("identity")
        .secure_endpoints()
        .allow_security_none()
        .hello_timeout(Duration::from_millis(300))
        .start()
        .await
        .expect("server");
    (server, cert)
}

/// Reads until the server closes, and returns every frame it sent.
async fn frames_until_close(stream: &mut TcpStream) -> Vec<Vec<u8>> {
    let mut decoder = FrameDecoder::new(1 << 20);
    let mut buf = vec![0u8; 65536];
    let mut frames = Vec::new();
    loop {
        let n = tokio::time::timeout(STEP_TIMEOUT, stream.read(&mut buf))
            .await
            .expect("the server closes in time")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        decoder.push(&buf[..n]);
        while let Ok(Some(frame)) = decoder.next_frame() {
            frames.push(frame.bytes);
        }
    }
    frames
}

async fn expect_error_and_close(stream: &mut TcpStream, status: StatusCode) {
    let frames = frames_until_close(stream).await;
    let last = frames.last().expect("an Error message before the close");
    match UacpMessage::decode(last) {
        Ok(UacpMessage::Error(ErrorMessage { error, .. })) => assert_eq!(error, status),
        other => panic!("expected an Error message, got {other:?}"),
    }
}

async fn still_serving(server: &Server, cert: &[u8]) {
    let client = certvault_opcua::client::connect(
        server.endpoint_url(),
        SecurityPolicy::Basic256Sha256,
        SecurityMode::SignAndEncrypt,
        Some(identity(soft_key(2048, "good"), "good", "urn:certvault:test:good")),
        Some(cert),
    )
    .await
    .expect("a well-behaved client still connects");
    assert_eq!(client.get_endpoints().await.expect("GetEndpoints").len(), 7);
    client.close().await.expect("close");
}

async fn raw(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.local_addr()).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

async fn hello(stream: &mut TcpStream, server: &Server) -> certvault_opcua::transport::uacp::Negotiated {
    let limits = Limits::default();
    let hello = limits.hello(server.endpoint_url()).expect("hello");
    stream.write_all(&hello.encode().expect("encode")).await.expect("write");
    let mut decoder = FrameDecoder::new(65535);
    let mut buf = vec![0u8; 65536];
    loop {
        if let Some(frame) = decoder.next_frame().expect("frame") {
            let UacpMessage::Acknowledge(ack) = UacpMessage::decode(&frame.bytes).expect("ack") else {
                panic!("expected Acknowledge")
            };
            return limits.accept_acknowledge(&hello, &ack).expect("limits");
        }
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before Acknowledge");
        decoder.push(&buf[..n]);
    }
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
            identity: Some(identity(soft_key(2048, "mallory"), "mallory", "urn:certvault:test:mallory")),
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
