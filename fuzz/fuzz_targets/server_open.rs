//! Server-side OpenSecureChannel processing. Input: one selector byte, then one frame.
//! Selector even: a fresh server (`fuzzing::server_channel`, every endpoint offered) gets an Issue.
//! Selector odd: a server with an open Basic256Sha256/SignAndEncrypt channel (`fuzzing::open_pair`) gets a Renew.
#![no_main]

use certvault_opcua::channel::policy::{SecurityMode, SecurityPolicy};
use certvault_opcua::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        fuzz_support::identities();
    },
    |data: &[u8]| {
        let Some((&selector, frame)) = data.split_first() else { return };
        let ids = fuzz_support::identities();
        let now = fuzz_support::now();
        let mut server = if selector % 2 == 0 {
            fuzzing::server_channel(ids)
        } else {
            let policy = SecurityPolicy::Basic256Sha256;
            fuzzing::open_pair(policy, SecurityMode::SignAndEncrypt, ids, now).unwrap().1
        };
        let result = server.handle_frame(frame, fuzz_support::later(1));
        if result.is_err() {
            // Any failed OpenSecureChannel closes the channel with an Error message for the client.
            assert!(server.is_closed());
            assert!(server.poll_transmit().is_some());
        }
        while server.poll_transmit().is_some() {}
        while server.poll_event().is_some() {}
    }
);
