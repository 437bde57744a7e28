//! The OPC UA Connection Protocol (UACP) over a byte stream: framing, Hello/Acknowledge/Error/ReverseHello and the
//! negotiation of buffer and message limits ([`uacp`]), the sans-IO connection phase ([`connection`]), `opc.tcp`
//! URLs ([`url`]) and the tokio driver ([`tcp`]).

pub mod connection;
pub mod tcp;
pub mod uacp;
pub mod url;
