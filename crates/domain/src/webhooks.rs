//! Webhooks: what a client may register and where LedgerFlow may send.
//!
//! An endpoint is a [`WebhookUrl`] (parsed once, at the edge) that is also judged against a
//! [`UrlPolicy`] twice: by the gateway when it is registered, and by the dispatcher at every
//! delivery, against the addresses its name resolves to *then* (a name that pointed outside at
//! registration may point inside later). The address rule is [`UrlPolicy::allows`], a pure
//! function of one address.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::{DomainError, EventType};

/// The event types a webhook subscribes to: at least one, each once. No wildcard: a client
/// that wants every type lists them, so that a type added later is never sent to an endpoint
/// that does not know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTypes(BTreeSet<EventType>);

impl EventTypes {
    pub fn new(types: impl IntoIterator<Item = EventType>) -> Result<Self, DomainError> {
        let types: BTreeSet<EventType> = types.into_iter().collect();
        if types.is_empty() {
            return Err(DomainError::invalid("types", "must name at least one event type"));
        }
        Ok(Self(types))
    }

    pub fn contains(&self, t: EventType) -> bool {
        self.0.contains(&t)
    }

    pub fn iter(&self) -> impl Iterator<Item = EventType> + '_ {
        self.0.iter().copied()
    }
}

/// The longest URL a webhook may have.
pub const MAX_URL_BYTES: usize = 2048;

/// Where a webhook delivers: an absolute `http` or `https` URL with a host, no credentials and
/// no fragment. Whether its scheme and addresses are allowed is the [`UrlPolicy`]'s to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(url::Url);

/// What a webhook URL names as its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlHost<'a> {
    /// A name, to be resolved at each delivery.
    Name(&'a str),
    /// An address written in the URL.
    Address(IpAddr),
}

impl WebhookUrl {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn is_https(&self) -> bool {
        self.0.scheme() == "https"
    }

    pub fn host(&self) -> UrlHost<'_> {
        match self.0.host() {
            Some(url::Host::Ipv4(ip)) => UrlHost::Address(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => UrlHost::Address(IpAddr::V6(ip)),
            Some(url::Host::Domain(name)) => UrlHost::Name(name),
            // Refused by `from_str`: http(s) URLs always have a host.
            None => UrlHost::Name(""),
        }
    }

    /// The port, explicit or the scheme's.
    pub fn port(&self) -> u16 {
        self.0.port_or_known_default().unwrap_or(443)
    }
}

impl FromStr for WebhookUrl {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, DomainError> {
        let refuse = |why: &str| DomainError::invalid("url", why);
        if s.len() > MAX_URL_BYTES {
            return Err(refuse("must be at most 2048 bytes"));
        }
        let url = url::Url::parse(s).map_err(|e| refuse(&format!("must be an absolute URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(refuse("must be an https:// URL"));
        }
        if url.host().is_none() {
            return Err(refuse("must name a host"));
        }
        // Credentials in a URL would be shown in every listing of the webhook.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refuse("must not carry credentials"));
        }
        if url.fragment().is_some() {
            return Err(refuse("must not have a fragment"));
        }
        Ok(Self(url))
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What endpoints LedgerFlow may send to. The default is the strict one: `https` only, public
/// addresses only. Tests and development loosen it with `LEDGERFLOW_WEBHOOK_ALLOW_HTTP` and
/// `LEDGERFLOW_WEBHOOK_ALLOW_PRIVATE`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UrlPolicy {
    pub allow_http: bool,
    pub allow_private: bool,
}

impl UrlPolicy {
    /// Refuses a plain-`http` URL unless allowed.
    pub fn check_scheme(&self, url: &WebhookUrl) -> Result<(), DomainError> {
        if url.is_https() || self.allow_http {
            Ok(())
        } else {
            Err(DomainError::invalid("url", "must be an https:// URL"))
        }
    }

    /// Refuses an address the endpoint resolved to unless it may be sent to.
    pub fn check_address(&self, ip: IpAddr) -> Result<(), DomainError> {
        if self.allows(ip) {
            Ok(())
        } else {
            Err(DomainError::invalid(
                "url",
                format!("resolves to {ip}, a loopback, private, link-local or otherwise internal address"),
            ))
        }
    }

    /// Whether a delivery may connect to `ip`: anything public, and internal addresses only
    /// when `allow_private`. Never the unspecified address (it means "this host").
    pub fn allows(&self, ip: IpAddr) -> bool {
        match classify(ip) {
            Reach::Public => true,
            Reach::Internal => self.allow_private,
            Reach::Never => false,
        }
    }
}

enum Reach {
    Public,
    Internal,
    Never,
}

fn classify(ip: IpAddr) -> Reach {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        // An IPv4 address written as IPv6 reaches the IPv4 host: judged as that.
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn classify_v4(ip: Ipv4Addr) -> Reach {
    let [a, b, ..] = ip.octets();
    let cgnat = a == 100 && (64..128).contains(&b);
    // 0.0.0.0/8 is "this network"; connecting to it reaches the local host on Linux.
    if ip.is_unspecified() || a == 0 || ip.is_broadcast() || ip.is_multicast() {
        Reach::Never
    } else if ip.is_loopback() || ip.is_private() || ip.is_link_local() || cgnat {
        // Link-local includes 169.254.169.254, the cloud metadata service.
        Reach::Internal
    } else {
        Reach::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> Reach {
    if ip.is_unspecified() || ip.is_multicast() {
        Reach::Never
    } else if ip.is_loopback() || ip.is_unique_local() || ip.is_unicast_link_local() {
        Reach::Internal
    } else {
        Reach::Public
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_names_at_least_one_event_type_each_once() {
        assert!(EventTypes::new([]).is_err());
        let twice = EventTypes::new([EventType::Completed, EventType::Completed]).expect("one type");
        assert_eq!(twice.iter().count(), 1);
    }

    #[test]
    fn urls_are_absolute_web_urls_without_credentials() {
        let url: WebhookUrl = "https://hooks.example.com/ledger?x=1".parse().expect("a URL");
        assert_eq!((url.host(), url.port(), url.is_https()), (UrlHost::Name("hooks.example.com"), 443, true));
        let literal: WebhookUrl = "http://[::1]:8080/".parse().expect("a URL");
        assert_eq!(literal.host(), UrlHost::Address("::1".parse().expect("an address")));
        for bad in [
            "hooks.example.com/x",
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "https://example.com/#frag",
            "file:///etc/passwd",
            "",
        ] {
            assert!(bad.parse::<WebhookUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn only_https_unless_allowed() {
        let plain: WebhookUrl = "http://example.com/".parse().expect("a URL");
        assert!(UrlPolicy::default().check_scheme(&plain).is_err());
        assert!(UrlPolicy { allow_http: true, allow_private: false }.check_scheme(&plain).is_ok());
    }

    #[test]
    fn internal_addresses_are_refused_unless_allowed() {
        let strict = UrlPolicy::default();
        let loose = UrlPolicy { allow_http: false, allow_private: true };
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            let ip: IpAddr = internal.parse().expect("an address");
            assert!(!strict.allows(ip), "{internal}");
            assert!(loose.allows(ip), "{internal}");
        }
        for never in ["0.0.0.0", "0.1.2.3", "::", "255.255.255.255", "224.0.0.1", "ff02::1"] {
            let ip: IpAddr = never.parse().expect("an address");
            assert!(!strict.allows(ip) && !loose.allows(ip), "{never}");
        }
        for public in ["93.184.216.34", "100.128.0.1", "2606:2800:220:1::1"] {
            assert!(strict.allows(public.parse().expect("an address")), "{public}");
        }
    }
}
