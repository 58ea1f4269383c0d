//! Who a request comes from, as far as sharing the password-hashing slots goes: the TCP
//! peer's address, or, behind trusted proxies, the client address they report in a header.
//!
//! A header is believed only from a configured proxy's connection (anyone else can write
//! it), and only as far back as the chain of trusted proxies reaches: of the addresses in the
//! header, the right-most one that is not itself a trusted proxy is the client, since every
//! hop appends the address it received the request from and only the hops we trust are honest
//! about it.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};
use ipnet::IpNet;

use crate::AppState;
use crate::error::ApiError;

/// The TCP peer of a request's connection, set on each request by the accept loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub SocketAddr);

/// The header a trusted proxy puts the client's address in, e.g. `X-Forwarded-For`: a
/// comma-separated list of addresses (each may carry a port), the latest hop last, in one or
/// several header lines. RFC 7239's `Forwarded`, which has another syntax, is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHeader(HeaderName);

impl FromStr for ProxyHeader {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let name = HeaderName::from_str(s.trim()).map_err(|_| format!("`{s}` is not a header name"))?;
        if name.as_str() == "forwarded" {
            return Err("`Forwarded` (RFC 7239) is not read; use a header of addresses such as X-Forwarded-For".into());
        }
        Ok(Self(name))
    }
}

impl fmt::Display for ProxyHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// A trusted proxy: an address or a network of them (`10.0.0.0/8`, `fd00::/8`, `127.0.0.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyNet(IpNet);

impl FromStr for ProxyNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match (s.parse::<IpNet>(), s.parse::<IpAddr>()) {
            (Ok(net), _) => Ok(Self(net.trunc())),
            (_, Ok(ip)) => Ok(Self(IpNet::from(ip.to_canonical()))),
            _ => Err(format!("`{s}` is neither an IP address nor a network (CIDR)")),
        }
    }
}

impl fmt::Display for ProxyNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where client addresses come from behind proxies: the header, and the proxies whose
/// connections may set it. Both or neither: a header believed from anyone would let every
/// client name itself anew on each request, and proxies without a header say nothing.
#[derive(Debug, Clone)]
pub struct TrustedProxies {
    header: HeaderName,
    proxies: Vec<IpNet>,
}

impl TrustedProxies {
    /// `None` when neither is set; an error when only one is.
    pub fn new(header: Option<ProxyHeader>, proxies: &[ProxyNet]) -> Result<Option<Self>, &'static str> {
        match (header, proxies.is_empty()) {
            (None, true) => Ok(None),
            (Some(ProxyHeader(header)), false) => {
                Ok(Some(Self { header, proxies: proxies.iter().map(|p| p.0).collect() }))
            }
            (Some(_), true) => Err("a trusted proxy header needs the trusted proxies whose connections may set it"),
            (None, false) => Err("trusted proxies need the header they report client addresses in"),
        }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.proxies.iter().any(|net| net.contains(&ip))
    }
}

/// The client a request is charged to: an IPv4 address, or an IPv6 address's /64 network
/// (one host usually has a whole /64 to pick addresses from, so a single IPv6 address would
/// let it be as many clients as it likes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let prefix = v6.to_bits() & !u128::from(u64::MAX);
                Self(IpAddr::V6(Ipv6Addr::from_bits(prefix)))
            }
            v4 => Self(v4),
        }
    }
}

/// The client's address: the peer's, or, when the peer is a trusted proxy, the right-most
/// address of the header that is not a trusted proxy. When the header is missing, or every
/// address in it is a trusted proxy, the left-most trusted hop is the client; an entry that is
/// not an address stops the walk at the hop that handed it over (a trusted proxy reports what
/// it saw, so garbage there is older than any hop we trust).
fn client_address(peer: IpAddr, headers: &HeaderMap, proxies: Option<&TrustedProxies>) -> IpAddr {
    let peer = peer.to_canonical();
    let Some(proxies) = proxies.filter(|p| p.trusts(peer)) else { return peer };
    let listed: Vec<&str> = headers
        .get_all(&proxies.header)
        .iter()
        .flat_map(|line| line.to_str().unwrap_or("-").split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for entry in listed.into_iter().rev() {
        let Some(ip) = address(entry) else { return client };
        client = ip;
        if !proxies.trusts(ip) {
            break;
        }
    }
    client
}

/// One entry of an address header: `192.0.2.1`, `192.0.2.1:443`, `2001:db8::1` or
/// `[2001:db8::1]:443`.
fn address(entry: &str) -> Option<IpAddr> {
    let ip =
        entry.parse::<IpAddr>().ok().or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip())).or_else(|| {
            entry.strip_prefix('[').and_then(|e| e.strip_suffix(']')).and_then(|e| e.parse::<IpAddr>().ok())
        })?;
    Some(ip.to_canonical())
}

impl FromRequestParts<AppState> for Source {
    type Rejection = ApiError;

    /// Never refuses: a request without a peer (only the router's own tests make those) is
    /// charged to the unspecified address.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = parts.extensions.get::<Peer>().map_or(IpAddr::from([0, 0, 0, 0]), |p| p.0.ip());
        Ok(Self::of(client_address(peer, &parts.headers, state.config.trusted_proxies.as_ref())))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn proxies(nets: &[&str]) -> TrustedProxies {
        let nets: Vec<ProxyNet> = nets.iter().map(|n| n.parse().unwrap()).collect();
        TrustedProxies::new(Some("X-Forwarded-For".parse().unwrap()), &nets).unwrap().unwrap()
    }

    fn client(peer: &str, lines: &[&str], trusted: Option<&TrustedProxies>) -> String {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append("x-forwarded-for", HeaderValue::from_str(line).unwrap());
        }
        client_address(peer.parse().unwrap(), &headers, trusted).to_string()
    }

    #[test]
    fn the_header_is_believed_only_from_trusted_proxies_and_only_as_far_as_they_reach() {
        let trusted = proxies(&["10.0.0.0/8", "127.0.0.1"]);
        // Not configured, or not from a proxy: the peer, whatever the header says.
        assert_eq!(client("192.0.2.7", &["198.51.100.1"], None), "192.0.2.7");
        assert_eq!(client("192.0.2.7", &["198.51.100.1"], Some(&trusted)), "192.0.2.7");
        // From a proxy: the right-most address that is not a proxy; what the client wrote
        // to the left of it is not believed.
        assert_eq!(client("10.1.2.3", &["203.0.113.5, 198.51.100.1"], Some(&trusted)), "198.51.100.1");
        assert_eq!(client("127.0.0.1", &["203.0.113.5", "198.51.100.1, 10.9.9.9"], Some(&trusted)), "198.51.100.1");
        assert_eq!(client("10.1.2.3", &["[2001:db8::1]:443"], Some(&trusted)), "2001:db8::1");
        assert_eq!(client("10.1.2.3", &["198.51.100.1:8080"], Some(&trusted)), "198.51.100.1");
        // Missing, all proxies, or garbage: the last hop we trust.
        assert_eq!(client("10.1.2.3", &[], Some(&trusted)), "10.1.2.3");
        assert_eq!(client("10.1.2.3", &["10.0.0.1, 10.0.0.2"], Some(&trusted)), "10.0.0.1");
        assert_eq!(client("10.1.2.3", &["198.51.100.1, not-an-address"], Some(&trusted)), "10.1.2.3");
        assert_eq!(client("10.1.2.3", &["garbage, 10.0.0.2"], Some(&trusted)), "10.0.0.2");
        // An IPv4-mapped peer is its IPv4 address.
        assert_eq!(client("::ffff:10.1.2.3", &["198.51.100.1"], Some(&trusted)), "198.51.100.1");
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let a = Source::of("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = Source::of("2001:db8:1:2:bbbb::2".parse().unwrap());
        let c = Source::of("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(Source::of("::ffff:192.0.2.1".parse().unwrap()), Source::of("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn proxies_and_header_come_together_and_parse_strictly() {
        let header = || Some("X-Forwarded-For".parse::<ProxyHeader>().unwrap());
        let net: ProxyNet = "10.0.0.0/8".parse().unwrap();
        assert!(TrustedProxies::new(None, &[]).unwrap().is_none());
        assert!(TrustedProxies::new(header(), &[]).is_err());
        assert!(TrustedProxies::new(None, &[net]).is_err());
        assert!(TrustedProxies::new(header(), &[net]).unwrap().is_some());
        assert!("Forwarded".parse::<ProxyHeader>().is_err());
        assert!("bad header".parse::<ProxyHeader>().is_err());
        assert!("10.0.0.0/33".parse::<ProxyNet>().is_err());
        assert_eq!("10.1.2.3/8".parse::<ProxyNet>().unwrap().to_string(), "10.0.0.0/8");
        assert_eq!("::1".parse::<ProxyNet>().unwrap().to_string(), "::1/128");
    }
}
