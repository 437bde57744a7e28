//! The OPC UA Connection Protocol (UACP) over a byte stream: framing, Hello/Acknowledge/Error/ReverseHello and the
//! negotiation of buffer and message limits. No sockets here; the tokio driver feeds bytes in.

pub mod uacp;
