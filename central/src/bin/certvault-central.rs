//! `certvault-central`: the operator CLI and server of the certificate management central.
#![forbid(unsafe_code)]

fn main() {}
