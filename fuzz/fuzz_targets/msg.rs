//! MSG/CLO processing on an open server channel. Input: one selector byte, then a stream of frames (cut by
//! `FrameDecoder`) fed to the server one after the other, so multi-chunk messages, aborts, sequence numbers and
//! CLO are reached. The low bits of the selector pick the channel's policy and mode from
//! `fuzz_support::MSG_CONFIGS`; with bit 0x80 every frame is re-sealed with the client's token keys first
//! (`fuzz_support::reseal`), so the fuzzer gets past the MAC.
//!
//! State per input: the channel pair is rebuilt for every input with `fuzzing::open_pair` (fixed nonces, no RSA,
//! a few microseconds) instead of cloning an opened channel: `SecureChannel` holds AES/HMAC key objects that are
//! not `Clone`, and rebuilding keeps the core free of a fuzz-only `Clone`.
#![no_main]

use certvault_opcua::channel::secure_channel::Event;
use certvault_opcua::fuzzing;
use certvault_opcua::transport::uacp::FrameDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        fuzz_support::identities();
    },
    |data: &[u8]| {
        let Some((&selector, stream)) = data.split_first() else { return };
        let configs = fuzz_support::MSG_CONFIGS;
        let (policy, mode) = configs[(selector & !fuzz_support::RESEAL) as usize % configs.len()];
        let reseal = selector & fuzz_support::RESEAL != 0;
        let ids = fuzz_support::identities();
        let (_client, mut server) = fuzzing::open_pair(policy, mode, ids, fuzz_support::now()).unwrap();
        let mut decoder = FrameDecoder::new(fuzz_support::max_frame());
        decoder.push(stream);
        let mut t = 1;
        while let Ok(Some(frame)) = decoder.next_frame() {
            let bytes = if reseal { fuzz_support::reseal(policy, mode, &frame.bytes) } else { frame.bytes };
            let result = server.handle_frame(&bytes, fuzz_support::later(t));
            t += 1;
            while let Some(event) = server.poll_event() {
                if let Event::Request { request_id, .. } = event {
                    if server.is_open() {
                        server.send_response(request_id, b"response").unwrap();
                    }
                }
            }
            while server.poll_transmit().is_some() {}
            if result.is_err() && server.is_closed() {
                break;
            }
        }
    }
);
