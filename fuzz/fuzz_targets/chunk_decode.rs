//! Chunk decoding: the byte stream is cut into frames by `FrameDecoder` (once whole, once in two pieces, which must
//! agree), each frame goes through every header decoder, and chunks that open without keys (policy None) are
//! reassembled into messages under the default limits.
#![no_main]

use certvault_opcua::channel::asymmetric::{open_open, AsymmetricSecurityHeader};
use certvault_opcua::channel::chunk::{decode_abort_body, ChunkHeader, Reassembler, SequenceHeader};
use certvault_opcua::channel::policy::DeprecatedPolicies;
use certvault_opcua::channel::symmetric::{peek_token_id, SymmetricOpener};
use certvault_opcua::transport::uacp::{FrameDecoder, MessageHeader, MessageType, UacpMessage};
use libfuzzer_sys::fuzz_target;

fn frames(data: &[u8], split: usize) -> (Vec<Vec<u8>>, bool) {
    let mut dec = FrameDecoder::new(fuzz_support::max_frame());
    let mut out = Vec::new();
    let mut failed = false;
    for piece in [&data[..split], &data[split..]] {
        dec.push(piece);
        loop {
            match dec.next_frame() {
                Ok(Some(frame)) => {
                    assert_eq!(frame.bytes.len(), frame.header.message_size as usize);
                    out.push(frame.bytes);
                }
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            break;
        }
    }
    (out, failed)
}

fuzz_target!(|data: &[u8]| {
    let (whole, whole_failed) = frames(data, data.len());
    let (split, split_failed) = frames(data, data.len() / 2);
    assert_eq!(whole, split, "framing must not depend on how the bytes arrive");
    assert_eq!(whole_failed, split_failed);

    let limits = certvault_opcua::fuzzing::limits().1;
    let mut reassembler = Reassembler::new(limits.max_receive_message_size, limits.max_receive_chunk_count);
    let none = SymmetricOpener::none();
    for frame in &whole {
        let _ = MessageHeader::decode(frame);
        let _ = UacpMessage::decode(frame);
        let Ok(header) = ChunkHeader::decode(frame) else { continue };
        let _ = SequenceHeader::decode(frame.get(16..).unwrap_or_default());
        let opened = if header.message_type == MessageType::OpenSecureChannel {
            let _ = AsymmetricSecurityHeader::decode(frame);
            open_open(frame, None, DeprecatedPolicies::Reject).map(|o| (o.sequence, o.body))
        } else {
            let _ = peek_token_id(frame);
            none.open(frame).map(|o| (o.sequence, o.into_body()))
        };
        let Ok((sequence, body)) = opened else { continue };
        let _ = decode_abort_body(&body);
        let _ = reassembler.push(header.message_type, header.chunk_type, sequence.request_id, &body);
    }
});
