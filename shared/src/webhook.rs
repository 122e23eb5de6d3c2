//! Subscriber URIs and the webhook address guard (docs/api.md#subscriptions-webhook-guard).
//!
//! Zaqar posts to whatever a subscriber names; we refuse internal destinations so a subscription cannot
//! be used to reach the VPC, the instance metadata service or loopback services (SSRF). Two checks:
//! - at create/PATCH, a host that is an IP literal (in any spelling the WHATWG URL parser accepts:
//!   `2130706433`, `0x7f000001`, `017700000001`, `127.1`, `[::ffff:127.0.0.1]`) is checked at once;
//! - at delivery, host names are resolved once, refused if ANY address is refused, and the connection
//!   is pinned to the checked addresses (see the fan-out's resolver).
//!
//! `webhook_allow` (config) lists host names, addresses or CIDR ranges that are allowed anyway.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use url::{Host, Url};

/// Zaqar's `subscriber_types`, in its order (the error message prints this list).
pub const SUBSCRIBER_TYPES: [&str; 5] = ["http", "https", "mailto", "trust+http", "trust+https"];

/// A subscriber URI, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscriber {
    /// `http(s)://` and `trust+http(s)://` (delivered the same way: we hold no Keystone trusts).
    Webhook { url: Url, trust: bool },
    /// `mailto:addr[?subject=...]`.
    Mailto { to: String, subject: Option<String> },
}

/// The URI scheme the way Python's `urlparse` reads it (lower-cased), if the text has one.
/// Hand-written rather than taken from `url::Url`: which texts count as having a scheme decides which
/// of Zaqar's error texts a client gets, so it follows `urlparse`, not the WHATWG URL standard.
pub fn scheme(uri: &str) -> Option<String> {
    let (scheme, _) = uri.split_once(':')?;
    let mut chars = scheme.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (first_ok && rest_ok).then(|| scheme.to_ascii_lowercase())
}

/// Parses a subscriber whose scheme is one of [`SUBSCRIBER_TYPES`]; `Err` explains why it is unusable.
pub fn parse_subscriber(uri: &str) -> Result<Subscriber, String> {
    let scheme = scheme(uri).ok_or_else(|| "The subscriber has no URI scheme.".to_string())?;
    match scheme.as_str() {
        "http" | "https" | "trust+http" | "trust+https" => {
            let trust = scheme.starts_with("trust+");
            // Parse without the `trust+` prefix: only the special schemes get WHATWG host parsing
            // (IPv4 spellings normalised), which is what the check below and the HTTP client rely on.
            let plain = if trust { &uri["trust+".len()..] } else { uri };
            let url = Url::parse(plain).map_err(|_| "The subscriber is not a valid URL.".to_string())?;
            if url.host_str().is_none_or(str::is_empty) {
                return Err("The subscriber URL has no host.".into());
            }
            Ok(Subscriber::Webhook { url, trust })
        }
        "mailto" => {
            let rest = &uri[uri.find(':').map_or(0, |i| i + 1)..];
            let (addr, query) = rest.split_once('?').unwrap_or((rest, ""));
            let to = percent_encoding::percent_decode_str(addr).decode_utf8_lossy().trim().to_string();
            let subject = form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k.eq_ignore_ascii_case("subject"))
                .map(|(_, v)| v.into_owned());
            Ok(Subscriber::Mailto { to, subject })
        }
        _ => Err("Unsupported subscriber type.".into()),
    }
}

/// Destinations allowed although they are internal (`ZAQAR_WEBHOOK_ALLOW`): names, addresses, CIDRs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    hosts: Vec<String>,
    nets: Vec<IpNet>,
}

impl AllowList {
    /// Reads each entry as a CIDR range (`10.0.0.0/8`, `[fd00::]/8`), else an address (`127.0.0.1`,
    /// `[::1]`), else a host name. Host bits in a range are ignored (`10.1.2.3/8` is `10.0.0.0/8`).
    pub fn parse(entries: &[String]) -> Self {
        let mut list = AllowList::default();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let bare = entry.replace(['[', ']'], "");
            if let Ok(net) = bare.parse::<IpNet>() {
                list.nets.push(net.trunc());
            } else if let Ok(ip) = bare.parse::<IpAddr>() {
                list.nets.push(IpNet::from(ip));
            } else {
                list.hosts.push(entry.trim_end_matches('.').to_ascii_lowercase());
            }
        }
        list
    }

    /// A host name listed verbatim (its resolved addresses are then not checked).
    pub fn allows_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.contains(&host)
    }

    /// An address inside a listed address or range (IPv4-mapped IPv6 also matches its IPv4 entry).
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let candidates = [Some(ip), embedded_v4(ip).map(IpAddr::V4)];
        candidates.into_iter().flatten().any(|ip| self.nets.iter().any(|net| net.contains(&ip)))
    }
}

const fn net4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

#[allow(clippy::too_many_arguments)]
const fn net6(a: u16, b: u16, c: u16, d: u16, e: u16, f: u16, g: u16, h: u16, len: u8) -> Ipv6Net {
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), len)
}

/// IPv4 ranges a webhook must not reach (IANA special-purpose registry, plus cloud host services).
const REFUSED_V4: [(Ipv4Net, &str); 17] = [
    (net4(0, 0, 0, 0, 8), "unspecified (0.0.0.0/8)"),
    (net4(10, 0, 0, 0, 8), "private (10.0.0.0/8)"),
    (net4(100, 64, 0, 0, 10), "carrier-grade NAT (100.64.0.0/10)"),
    (net4(127, 0, 0, 0, 8), "loopback"),
    (net4(169, 254, 0, 0, 16), "link-local / instance metadata"),
    (net4(172, 16, 0, 0, 12), "private (172.16.0.0/12)"),
    (net4(192, 0, 0, 0, 24), "IETF protocol assignments"),
    (net4(192, 0, 2, 0, 24), "documentation"),
    (net4(192, 88, 99, 0, 24), "6to4 relay anycast"),
    (net4(192, 168, 0, 0, 16), "private (192.168.0.0/16)"),
    (net4(198, 18, 0, 0, 15), "benchmarking"),
    (net4(198, 51, 100, 0, 24), "documentation"),
    (net4(203, 0, 113, 0, 24), "documentation"),
    (net4(224, 0, 0, 0, 4), "multicast"),
    (net4(240, 0, 0, 0, 4), "reserved"),
    (net4(255, 255, 255, 255, 32), "broadcast"),
    (net4(168, 63, 129, 16, 32), "cloud host service"),
];

/// IPv6 ranges a webhook must not reach (loopback, unspecified and IPv4-embedding forms are checked
/// separately in [`refused_ip`]).
const REFUSED_V6: [(Ipv6Net, &str); 9] = [
    (net6(0xfc00, 0, 0, 0, 0, 0, 0, 0, 7), "unique local (fc00::/7, incl. fd00:ec2::254)"),
    (net6(0xfe80, 0, 0, 0, 0, 0, 0, 0, 10), "link-local"),
    (net6(0xfec0, 0, 0, 0, 0, 0, 0, 0, 10), "site-local"),
    (net6(0xff00, 0, 0, 0, 0, 0, 0, 0, 8), "multicast"),
    (net6(0x64, 0xff9b, 1, 0, 0, 0, 0, 0, 48), "local-use NAT64"),
    (net6(0x100, 0, 0, 0, 0, 0, 0, 0, 64), "discard-only"),
    (net6(0x2001, 0, 0, 0, 0, 0, 0, 0, 32), "Teredo (embeds an IPv4 address)"),
    (net6(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0, 32), "documentation"),
    (net6(0x2001, 0x10, 0, 0, 0, 0, 0, 0, 28), "ORCHID"),
];

/// IPv6 prefixes whose last 32 bits are an IPv4 address a packet may be translated to.
const V4_IN_LOW_BITS: [Ipv6Net; 4] = [
    net6(0, 0, 0, 0, 0, 0xffff, 0, 0, 96),    // ::ffff:0:0/96, IPv4-mapped
    net6(0, 0, 0, 0, 0xffff, 0, 0, 0, 96),    // ::ffff:0:0:0/96, IPv4-translated
    net6(0, 0, 0, 0, 0, 0, 0, 0, 96),         // ::/96, IPv4-compatible (deprecated)
    net6(0x64, 0xff9b, 0, 0, 0, 0, 0, 0, 96), // 64:ff9b::/96, NAT64
];

/// 6to4 (2002::/16): the IPv4 address is in bits 16..48 (`2002:AABB:CCDD::`).
const SIX_TO_FOUR: Ipv6Net = net6(0x2002, 0, 0, 0, 0, 0, 0, 0, 16);

/// Why an IPv4 address must not be reached, or `None` for a public address.
pub fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    REFUSED_V4.iter().find(|(net, _)| net.contains(&ip)).map(|(_, why)| *why)
}

/// The IPv4 address an IPv6 address carries by a translation mechanism (mapped, compatible, NAT64,
/// 6to4), which is where a packet to it may end up.
fn embedded_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    let bits = u128::from(v6);
    if V4_IN_LOW_BITS.iter().any(|net| net.contains(&v6)) {
        return Some(Ipv4Addr::from((bits & 0xffff_ffff) as u32));
    }
    if SIX_TO_FOUR.contains(&v6) {
        return Some(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32));
    }
    None
}

/// Why an address must not be reached, or `None` for a public address.
pub fn refused_ip(ip: IpAddr) -> Option<&'static str> {
    let v6 = match ip {
        IpAddr::V4(v4) => return refused_v4(v4),
        IpAddr::V6(v6) => v6,
    };
    if v6.is_unspecified() {
        return Some("unspecified");
    }
    if v6.is_loopback() {
        return Some("loopback");
    }
    if let Some(v4) = embedded_v4(ip) {
        return refused_v4(v4).map(|_| "IPv6 form of a refused IPv4 address");
    }
    REFUSED_V6.iter().find(|(net, _)| net.contains(&v6)).map(|(_, why)| *why)
}

/// Checks one address against the refusal list and the allow list.
pub fn check_ip(ip: IpAddr, allow: &AllowList) -> Result<(), String> {
    match refused_ip(ip) {
        Some(why) if !allow.allows_ip(ip) => Err(format!("The subscriber address {ip} is not allowed ({why}).")),
        _ => Ok(()),
    }
}

/// The create/PATCH-time check of a webhook URL: IP-literal hosts are checked now, names at delivery.
pub fn check_url_literal(url: &Url, allow: &AllowList) -> Result<(), String> {
    match url.host() {
        Some(Host::Ipv4(ip)) => check_ip(IpAddr::V4(ip), allow),
        Some(Host::Ipv6(ip)) => check_ip(IpAddr::V6(ip), allow),
        Some(Host::Domain(_)) => Ok(()),
        None => Err("The subscriber URL has no host.".into()),
    }
}

/// The delivery-time check of a resolved host: every address must pass (an attacker's DNS can mix a
/// public and an internal address), unless the name itself is allowed.
pub fn check_resolved(host: &str, addrs: &[IpAddr], allow: &AllowList) -> Result<(), String> {
    if allow.allows_host(host) {
        return Ok(());
    }
    if addrs.is_empty() {
        return Err(format!("{host} did not resolve."));
    }
    addrs.iter().try_for_each(|ip| check_ip(*ip, allow))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_check(uri: &str, allow: &AllowList) -> Result<(), String> {
        match parse_subscriber(uri)? {
            Subscriber::Webhook { url, .. } => check_url_literal(&url, allow),
            Subscriber::Mailto { .. } => Ok(()),
        }
    }

    #[test]
    fn literal_spellings_of_loopback_are_refused() {
        let none = AllowList::default();
        for uri in [
            "http://127.0.0.1/",
            "http://127.0.0.1:8080/x",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0x7F.0.0.1/",
            "http://017700000001/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://127.0.1/",
            "http://[::1]/",
            "http://[0:0:0:0:0:0:0:1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::7f00:1]/",
            "http://[2002:7f00:1::]/",
            "trust+http://2130706433/",
            "https://0/",
            "http://0.0.0.0/",
            "http://[::]/",
        ] {
            assert!(host_check(uri, &none).is_err(), "{uri} must be refused");
        }
    }

    #[test]
    fn internal_ranges_are_refused() {
        let none = AllowList::default();
        for uri in [
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://172.31.255.255/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://2852039166/", // 169.254.169.254 as one decimal number
            "http://0xa9fea9fe/",
            "http://100.64.0.1/",
            "http://100.127.255.254/",
            "http://224.0.0.1/",
            "http://239.255.255.250/",
            "http://255.255.255.255/",
            "http://0.1.2.3/",
            "http://[fd00:ec2::254]/",
            "http://[fc00::1]/",
            "http://[fe80::1]/",
            "http://[ff02::1]/",
            "http://[::ffff:10.0.0.1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[64:ff9b::10.0.0.1]/",
            "http://[2002:a9fe:a9fe::1]/",
            "http://[2002:c0a8:101::]/",
            "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
            "https://[fec0::1]/",
        ] {
            assert!(host_check(uri, &none).is_err(), "{uri} must be refused");
        }
    }

    #[test]
    fn public_addresses_and_names_pass_the_literal_check() {
        let none = AllowList::default();
        for uri in [
            "http://93.184.216.34/",
            "https://8.8.8.8:8443/hook",
            "http://100.128.0.1/",
            "http://172.32.0.1/",
            "http://[2606:4700:4700::1111]/",
            "http://[::ffff:8.8.8.8]/",
            "http://[64:ff9b::808:808]/",
            "http://[2002:808:808::1]/",
            "http://example.com/hook",
            "http://localhost/", // names are checked after DNS, at delivery
            "mailto:ops@example.com",
        ] {
            assert!(host_check(uri, &none).is_ok(), "{uri} must pass");
        }
    }

    #[test]
    fn allow_list_admits_addresses_ranges_and_names() {
        let allow =
            AllowList::parse(&["127.0.0.1".into(), "10.0.0.0/8".into(), "[::1]".into(), "Hooks.Internal.".into()]);
        assert!(host_check("http://127.0.0.1:9000/", &allow).is_ok());
        assert!(host_check("http://2130706433/", &allow).is_ok());
        assert!(host_check("http://[::ffff:127.0.0.1]/", &allow).is_ok());
        assert!(host_check("http://10.9.8.7/", &allow).is_ok());
        assert!(host_check("http://[::1]/", &allow).is_ok());
        assert!(host_check("http://127.0.0.2/", &allow).is_err());
        assert!(host_check("http://169.254.169.254/", &allow).is_err());
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let meta: IpAddr = "169.254.169.254".parse().unwrap();
        let public: IpAddr = "93.184.216.34".parse().unwrap();
        assert!(check_resolved("hooks.internal", &[meta], &allow).is_ok());
        assert!(check_resolved("evil.example", &[public, meta], &allow).is_err());
        assert!(check_resolved("evil.example", &[public], &allow).is_ok());
        assert!(check_resolved("localhost", &[lo], &allow).is_ok());
        assert!(check_resolved("localhost", &[lo], &AllowList::default()).is_err());
        assert!(check_resolved("nothing.example", &[], &AllowList::default()).is_err());
    }

    #[test]
    fn allow_list_ranges_use_prefixes_not_host_bits() {
        let allow = AllowList::parse(&[
            "10.1.2.3/8".into(),
            " [fd00::]/8 ".into(),
            "192.168.7.0/24".into(),
            "not-a-cidr/33".into(),
            "300.1.1.1".into(),
        ]);
        for ok in ["10.255.0.1", "fd12::1", "192.168.7.200", "::ffff:192.168.7.9"] {
            assert!(allow.allows_ip(ok.parse().unwrap()), "{ok} must be allowed");
        }
        for refused in ["11.0.0.1", "fe80::1", "192.168.8.1", "127.0.0.1"] {
            assert!(!allow.allows_ip(refused.parse().unwrap()), "{refused} must not be allowed");
        }
        // Entries that are neither a range nor an address are host names, compared verbatim.
        assert!(allow.allows_host("not-a-cidr/33") && allow.allows_host("300.1.1.1"));
        // A /0 range admits every address of its family only.
        let all_v4 = AllowList::parse(&["0.0.0.0/0".into()]);
        assert!(all_v4.allows_ip("169.254.169.254".parse().unwrap()));
        assert!(!all_v4.allows_ip("fd00::1".parse().unwrap()));
    }

    #[test]
    fn range_edges_are_exact() {
        for (inside, outside) in [
            ("100.127.255.255", "100.128.0.0"),
            ("172.31.255.255", "172.32.0.0"),
            ("198.19.255.255", "198.20.0.0"),
            ("192.0.0.255", "192.0.1.0"),
        ] {
            assert!(refused_v4(inside.parse().unwrap()).is_some(), "{inside}");
            assert!(refused_v4(outside.parse().unwrap()).is_none(), "{outside}");
        }
        assert!(refused_v4("168.63.129.16".parse().unwrap()).is_some());
        assert!(refused_v4("168.63.129.17".parse().unwrap()).is_none());
        assert!(refused_ip("2001:1f::1".parse().unwrap()).is_some(), "ORCHID 2001:10::/28");
        assert!(refused_ip("2001:4860::8888".parse().unwrap()).is_none());
    }

    #[test]
    fn subscribers_parse() {
        assert_eq!(scheme("HTTP://x"), Some("http".into()));
        assert_eq!(scheme("trust+https://x"), Some("trust+https".into()));
        assert_eq!(scheme("no-scheme"), None);
        assert_eq!(scheme("1http://x"), None);
        match parse_subscriber("trust+https://example.com/a").unwrap() {
            Subscriber::Webhook { url, trust } => {
                assert!(trust);
                assert_eq!(url.as_str(), "https://example.com/a");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_subscriber("mailto:a%40b@example.com?Subject=Hi%20there").unwrap(),
            Subscriber::Mailto { to: "a@b@example.com".into(), subject: Some("Hi there".into()) }
        );
        assert!(parse_subscriber("http://").is_err());
        assert!(parse_subscriber("http:").is_err());
        assert!(parse_subscriber("ftp://x").is_err());
    }
}
