//! `opc.tcp://host[:port][/path]` URLs: just enough parsing to dial a server and to compare the EndpointUrl of a
//! Hello with the endpoints a server offers.

use crate::error::{Error, Result};

/// The scheme of the UA TCP mapping.
pub const SCHEME: &str = "opc.tcp://";
/// The IANA-registered port of OPC UA over TCP, used when a URL names none.
pub const DEFAULT_PORT: u16 = 4840;

/// A parsed `opc.tcp` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpcTcpUrl {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port ([`DEFAULT_PORT`] when absent).
    pub port: u16,
    /// Path, always starting with `/` (`/` when absent).
    pub path: String,
}

impl OpcTcpUrl {
    /// Parses `url`; anything but a well-formed `opc.tcp` URL is `BadTcpEndpointUrlInvalid`.
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| Error::EndpointUrlInvalid(format!("{url:?}: {why}"));
        let rest = url
            .get(..SCHEME.len())
            .filter(|s| s.eq_ignore_ascii_case(SCHEME))
            .and_then(|_| url.get(SCHEME.len()..))
            .ok_or_else(|| bad("not an opc.tcp URL"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed IPv6 bracket"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| bad("invalid port"))?,
            None => DEFAULT_PORT,
        };
        Ok(OpcTcpUrl { host: host.to_owned(), port, path: normalize_path(path) })
    }

    /// `host:port` for [`tokio::net::TcpStream::connect`].
    pub fn socket_address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URL again, with `port` instead of ours (a server bound to port 0 learns its port after binding).
    pub fn with_port(&self, port: u16) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("{SCHEME}{host}:{port}{}", self.path)
    }
}

/// Paths compare without a trailing slash, so `opc.tcp://h:1` and `opc.tcp://h:1/` name the same endpoint.
fn normalize_path(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_ports_and_paths() {
        let u = OpcTcpUrl::parse("opc.tcp://127.0.0.1:4855/").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("127.0.0.1", 4855, "/"));
        let u = OpcTcpUrl::parse("OPC.TCP://plc.example/UA/Server/").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("plc.example", 4840, "/UA/Server"));
        let u = OpcTcpUrl::parse("opc.tcp://[::1]:48010").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 48010));
        assert_eq!(u.socket_address(), "[::1]:48010");
        assert_eq!(OpcTcpUrl::parse("opc.tcp://h:0/x").unwrap().with_port(9), "opc.tcp://h:9/x");
    }

    #[test]
    fn rejects_what_is_not_an_opc_tcp_url() {
        for bad in ["", "http://h:1/", "opc.tcp://", "opc.tcp://:4840/", "opc.tcp://h:99999/", "opc.tcp://[::1/"] {
            assert!(matches!(OpcTcpUrl::parse(bad), Err(Error::EndpointUrlInvalid(_))), "{bad}");
        }
    }
}
