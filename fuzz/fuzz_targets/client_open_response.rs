//! Client-side OpenSecureChannel response processing. Input: one selector byte picking the client's policy and
//! mode from `fuzz_support::OPN_CONFIGS`, then one frame, given to a client whose Issue request (id 1) is
//! outstanding (`fuzzing::client_channel_awaiting_response`).
#![no_main]

use certvault_opcua::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        fuzz_support::identities();
    },
    |data: &[u8]| {
        let Some((&selector, frame)) = data.split_first() else { return };
        let (policy, mode) = fuzz_support::OPN_CONFIGS[selector as usize % fuzz_support::OPN_CONFIGS.len()];
        let ids = fuzz_support::identities();
        let mut client = fuzzing::client_channel_awaiting_response(policy, mode, ids).unwrap();
        let now = fuzz_support::now();
        if client.handle_frame(frame, now).is_ok() && client.is_open() {
            // A channel opened by a fuzzed response must be usable.
            client.send_request(b"after open").unwrap();
            assert!(client.poll_transmit().is_some());
            let _ = client.handle_timeout(fuzz_support::later(u64::from(u32::MAX)));
        }
        while client.poll_transmit().is_some() {}
        while client.poll_event().is_some() {}
    }
);
