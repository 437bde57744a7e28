//! Writes the fixed test identities (if `keys/` lacks them) and the seed corpora of the four fuzz targets.
//! Run in `fuzz/`: `cargo run --release --features seeds --bin make_seeds`. Seeds are valid protocol frames made by
//! the real client and server code, so the fuzzer starts past the headers and the cryptography.

use std::path::Path;
use std::time::Duration;

use certvault::csr::{self_signed, CsrRequest};
use certvault::soft::{generate_pkcs8, SoftKey};
use certvault::{KeyAlgorithm, KeyPolicy};
use certvault_opcua::channel::chunk::{encode_abort_body, SequenceHeader};
use certvault_opcua::channel::policy::{SecurityMode, SecurityPolicy};
use certvault_opcua::channel::secure_channel::SecureChannel;
use certvault_opcua::fuzzing;
use certvault_opcua::transport::uacp::{ChunkType, ErrorMessage, Limits, MessageType, ReverseHello};
use certvault_opcua::Error;
use fuzz_support::{identities, keys_dir, later, now, MSG_CONFIGS, OPN_CONFIGS, RESEAL};
use opcua_types::StatusCode;

fn make_identity(name: &str) {
    let dir = keys_dir();
    if dir.join(format!("{name}.der")).exists() {
        return;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let pkcs8 = generate_pkcs8(KeyAlgorithm::Rsa { bits: 2048 }).unwrap();
    std::fs::write(dir.join(format!("{name}.pk8")), &*pkcs8).unwrap();
    let key = SoftKey::from_pkcs8(pkcs8, name.as_bytes().to_vec(), name.into(), true, KeyPolicy::default()).unwrap();
    let req = CsrRequest {
        common_name: format!("certvault fuzzing {name}"),
        application_uri: Some(format!("urn:certvault:fuzzing:{name}")),
        dns_names: vec!["localhost".into()],
        ..CsrRequest::default()
    };
    // Fifty years, so the committed seeds stay valid.
    let cert = self_signed(&key, &req, Duration::from_secs(50 * 365 * 86_400)).unwrap();
    std::fs::write(dir.join(format!("{name}.der")), cert).unwrap();
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn with_selector(selector: u8, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![selector];
    for f in frames {
        v.extend_from_slice(f);
    }
    v
}

fn drain(ch: &mut SecureChannel) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| ch.poll_transmit()).collect()
}

fn slug(policy: SecurityPolicy, mode: SecurityMode) -> String {
    format!("{policy:?}-{mode:?}").to_lowercase()
}

fn main() {
    make_identity("server");
    make_identity("client");
    let ids = identities();

    // server_open and client_open_response: a real Issue per client configuration and the server's answer.
    for (i, &(policy, mode)) in OPN_CONFIGS.iter().enumerate() {
        let mut client = fuzzing::client_channel(policy, mode, ids).unwrap();
        client.open(now()).unwrap();
        let request = client.poll_transmit().unwrap();
        write("server_open", &format!("issue-{}", slug(policy, mode)), &with_selector(0, &[request.clone()]));
        let mut server = fuzzing::server_channel(ids);
        server.handle_frame(&request, now()).unwrap();
        let response = server.poll_transmit().unwrap();
        // The awaiting client of `client_open_response` was made for the same configuration: it must accept it.
        let mut check = fuzzing::client_channel_awaiting_response(policy, mode, ids).unwrap();
        check.handle_frame(&response, now()).unwrap();
        assert!(check.is_open());
        write(
            "client_open_response",
            &format!("response-{}", slug(policy, mode)),
            &with_selector(i as u8, &[response]),
        );
    }
    // A Renew on an open channel (selector odd in server_open).
    let (mut client, _) =
        fuzzing::open_pair(SecurityPolicy::Basic256Sha256, SecurityMode::SignAndEncrypt, ids, now()).unwrap();
    client.handle_timeout(later(u64::from(fuzzing::LIFETIME_MS))).unwrap();
    let renew = client.poll_transmit().unwrap();
    let (_, mut server) =
        fuzzing::open_pair(SecurityPolicy::Basic256Sha256, SecurityMode::SignAndEncrypt, ids, now()).unwrap();
    server.handle_frame(&renew, later(1)).unwrap();
    write("server_open", "renew-basic256sha256-signandencrypt", &with_selector(1, &[renew]));
    // Error responses the client must take: a ServiceFault is not produced by our server, but an ERR is.
    let err = ErrorMessage::from_error(&Error::SecurityChecksFailed("seed")).encode();
    write("client_open_response", "error-message", &with_selector(0, &[err.clone()]));

    // msg: per configuration, a conversation of requests (one small, one multi-chunk), an aborted message and CLO,
    // both as sealed frames and (selector | RESEAL) as the plaintext templates `fuzz_support::reseal` secures.
    for (i, &(policy, mode)) in MSG_CONFIGS.iter().enumerate() {
        let (mut client, mut server) = fuzzing::open_pair(policy, mode, ids, now()).unwrap();
        client.send_request(b"\x01\x00\xd6\x01small request").unwrap();
        client.send_request(&vec![0x5A; 70_000]).unwrap();
        let mut frames = drain(&mut client);
        client.close(later(2)).unwrap();
        let close = drain(&mut client);
        for f in frames.iter().chain(&close) {
            server.handle_frame(f, later(1)).unwrap();
        }
        assert!(server.is_closed());
        let name = slug(policy, mode);
        write("msg", &format!("conversation-{name}"), &with_selector(i as u8, &[frames[0].clone(), close[0].clone()]));
        write("msg", &format!("multichunk-{name}"), &with_selector(i as u8, &frames[1..]));
        frames.extend(close);
        let templates = plaintext_templates(policy, mode);
        write("msg", &format!("reseal-{name}"), &with_selector(i as u8 | RESEAL, &templates));
        // The templates, re-sealed, must be accepted.
        let (_, mut server) = fuzzing::open_pair(policy, mode, ids, now()).unwrap();
        for t in &templates {
            server.handle_frame(&fuzz_support::reseal(policy, mode, t), later(1)).unwrap();
        }
    }

    // chunk_decode: every UACP message, and chunks of each secure-conversation type.
    let limits = Limits::default();
    let hello = limits.hello("opc.tcp://localhost:4840/certvault").unwrap();
    let (ack, _) = limits.acknowledge(&hello).unwrap();
    let rhe =
        ReverseHello { server_uri: "urn:certvault:server".into(), endpoint_url: "opc.tcp://localhost:4840".into() };
    write("chunk_decode", "hel-ack-err", &[hello.encode().unwrap(), ack.encode(), err].concat());
    write("chunk_decode", "rhe", &rhe.encode().unwrap());
    let mut client = fuzzing::client_channel(SecurityPolicy::None, SecurityMode::None, ids).unwrap();
    client.open(now()).unwrap();
    write("chunk_decode", "opn-none", &client.poll_transmit().unwrap());
    let mut client = fuzzing::client_channel(SecurityPolicy::Basic256Sha256, SecurityMode::Sign, ids).unwrap();
    client.open(now()).unwrap();
    write("chunk_decode", "opn-basic256sha256", &client.poll_transmit().unwrap());
    let none = plaintext_templates(SecurityPolicy::None, SecurityMode::None);
    write("chunk_decode", "msg-abort-clo", &none.concat());
    eprintln!("seeds written under {}/corpus", env!("CARGO_MANIFEST_DIR"));
}

/// Unsealed chunks of channel 42, token 1: a request in two chunks, a message aborted after one chunk, and CLO.
fn plaintext_templates(policy: SecurityPolicy, mode: SecurityMode) -> Vec<Vec<u8>> {
    let (client, _) = fuzzing::open_pair(policy, mode, identities(), now()).unwrap();
    let _ = client;
    let encrypted = mode == SecurityMode::SignAndEncrypt;
    let mac_len = policy.symmetric_signature_len();
    let chunk = |message_type: MessageType, chunk_type: ChunkType, seq: u32, request_id: u32, body: &[u8]| {
        let mut v = Vec::new();
        v.extend_from_slice(&message_type.code());
        v.push(chunk_type.code());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&fuzzing::SECURE_CHANNEL_ID.to_le_bytes());
        v.extend_from_slice(&1u32.to_le_bytes());
        SequenceHeader { sequence_number: seq, request_id }.encode(&mut v);
        v.extend_from_slice(body);
        if encrypted {
            // OPC UA padding: PaddingSize bytes of value PaddingSize plus the PaddingSize byte itself, so that the
            // plaintext and the MAC fill whole AES blocks.
            let unpadded = v.len() - 16 + 1 + mac_len;
            let pad = (16 - unpadded % 16) % 16;
            v.extend(std::iter::repeat_n(pad as u8, pad + 1));
        }
        let n = v.len() as u32;
        v[4..8].copy_from_slice(&n.to_le_bytes());
        v
    };
    vec![
        chunk(MessageType::Message, ChunkType::Intermediate, 2, 2, b"\x01\x00\xd6\x01first half, "),
        chunk(MessageType::Message, ChunkType::Final, 3, 2, b"second half"),
        chunk(MessageType::Message, ChunkType::Intermediate, 4, 3, b"to be aborted"),
        chunk(MessageType::Message, ChunkType::Abort, 5, 3, &encode_abort_body(StatusCode::BadRequestTooLarge, "seed")),
        chunk(MessageType::CloseSecureChannel, ChunkType::Final, 6, 4, b"\x01\x00\xc4\x01"),
    ]
}
