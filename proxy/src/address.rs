//! Resolve once, check every address, dial exactly what was checked: the defence against SSRF
//! and DNS rebinding. Loopback, private, link-local, shared, documentation, cloud metadata and
//! every other address that is not globally reachable (see [`special`]) are refused unless the
//! policy allows private addresses for that host.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("`{0}` does not resolve")]
    Unresolvable(String),
    #[error("`{host}` resolves to {addr}, a {class} address, which sandboxes may not reach")]
    Refused {
        host: String,
        addr: IpAddr,
        class: &'static str,
    },
}

/// Why an address is special, or `None` for an ordinary public address.
///
/// The tables follow IANA's IPv4 and IPv6 Special-Purpose Address Registries (as of
/// 2025-10-09), plus multicast, the rest of IPv6 outside global unicast (`2000::/3`), and cloud
/// metadata endpoints. Addresses that embed an IPv4 address (IPv4-mapped, NAT64's well-known
/// prefix, 6to4) are judged by that address.
pub fn special(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => special_v4(v4),
            None => special_v6(v6),
        },
    }
}

/// IPv4 blocks refused, more specific first: the first one an address falls in names it.
#[rustfmt::skip]
const SPECIAL_V4: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(169, 254, 169, 254), 32, "cloud metadata"),
    (Ipv4Addr::new(100, 100, 100, 200), 32, "cloud metadata"),
    (Ipv4Addr::new(168, 63, 129, 16), 32, "cloud metadata"),
    (Ipv4Addr::new(0, 0, 0, 0), 32, "unspecified"),
    (Ipv4Addr::new(0, 0, 0, 0), 8, "\"this network\""),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private"),
    (Ipv4Addr::new(100, 64, 0, 0), 10, "shared (carrier-grade NAT)"),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (Ipv4Addr::new(169, 254, 0, 0), 16, "link-local"),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private"),
    // Includes the PCP and TURN anycast addresses (192.0.0.9, .10): they lead to services of
    // the local network.
    (Ipv4Addr::new(192, 0, 0, 0), 24, "IETF protocol assignment"),
    (Ipv4Addr::new(192, 0, 2, 0), 24, "documentation"),
    (Ipv4Addr::new(192, 88, 99, 0), 24, "6to4 relay anycast (deprecated)"),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking"),
    (Ipv4Addr::new(198, 51, 100, 0), 24, "documentation"),
    (Ipv4Addr::new(203, 0, 113, 0), 24, "documentation"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    (Ipv4Addr::new(255, 255, 255, 255), 32, "broadcast"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved"),
];

/// IPv6 blocks, more specific first: the first one an address falls in decides, `None` meaning
/// globally reachable. Blocks that embed IPv4 are handled by [`embedded_v4`] first.
#[rustfmt::skip]
const SPECIAL_V6: &[(Ipv6Addr, u8, Option<&str>)] = &[
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 128, Some("unspecified")),
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1), 128, Some("loopback")),
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 96, Some("IPv4-compatible")),
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48, Some("NAT64 (local-use)")),
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64, Some("discard-only")),
    (Ipv6Addr::new(0x100, 0, 0, 1, 0, 0, 0, 0), 64, Some("dummy")),
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32, Some("Teredo")),
    // The globally reachable parts of 2001::/23: AMT, AS112, ORCHIDv2 and drone entity tags.
    // Its PCP, TURN and DNS-SD anycast addresses (2001:1::1 to ::3) lead to services of the
    // local network, so they stay refused.
    (Ipv6Addr::new(0x2001, 3, 0, 0, 0, 0, 0, 0), 32, None),
    (Ipv6Addr::new(0x2001, 4, 0x112, 0, 0, 0, 0, 0), 48, None),
    (Ipv6Addr::new(0x2001, 0x20, 0, 0, 0, 0, 0, 0), 28, None),
    (Ipv6Addr::new(0x2001, 0x30, 0, 0, 0, 0, 0, 0), 28, None),
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23, Some("IETF protocol assignment")),
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32, Some("documentation")),
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20, Some("documentation")),
    (Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0), 16, Some("segment routing (SRv6)")),
    (Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254), 128, Some("cloud metadata")),
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7, Some("private (unique local)")),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, Some("link-local")),
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10, Some("site-local")),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, Some("multicast")),
    (Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3, None),
    // Everything else is unassigned ("reserved by IETF").
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 0, Some("reserved")),
];

fn special_v4(v4: Ipv4Addr) -> Option<&'static str> {
    let bits = u32::from(v4);
    SPECIAL_V4
        .iter()
        .find(|(net, len, _)| within(bits.into(), u32::from(*net).into(), 32 - u32::from(*len)))
        .map(|(_, _, class)| *class)
}

fn special_v6(v6: Ipv6Addr) -> Option<&'static str> {
    let bits = u128::from(v6);
    SPECIAL_V6
        .iter()
        .find(|(net, len, _)| within(bits, u128::from(*net), 128 - u32::from(*len)))
        .and_then(|(_, _, class)| *class)
}

/// Whether `addr` and `net` agree on all but their last `host_bits` bits.
fn within(addr: u128, net: u128, host_bits: u32) -> bool {
    addr.checked_shr(host_bits).unwrap_or(0) == net.checked_shr(host_bits).unwrap_or(0)
}

/// The IPv4 address an IPv6 address stands for, where it is reached through one: IPv4-mapped
/// (`::ffff:0:0/96`, which a dual-stack socket dials as IPv4), NAT64's well-known prefix
/// (`64:ff9b::/96`) and 6to4 (`2002::/16`, the address in bits 16 to 48). A NAT64 or 6to4 relay
/// would carry the connection to that IPv4 address, so it must pass the IPv4 checks.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(v6);
    let low = Ipv4Addr::from(bits as u32);
    let mapped = within(bits, 0xffff_0000_0000, 32);
    let nat64 = within(bits, 0x64_ff9b << 96, 32);
    if mapped || nat64 {
        Some(low)
    } else if within(bits, 0x2002 << 112, 112) {
        Some(Ipv4Addr::from((bits >> 80) as u32))
    } else {
        None
    }
}

const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Resolves `host` once and returns the address to dial, refusing special addresses unless
/// `allow_private`.
pub async fn resolve(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<SocketAddr, AddressError> {
    let bare = centaur_protocol::egress::host::normalize(host);
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::time::timeout(
            RESOLVE_TIMEOUT,
            tokio::net::lookup_host((bare.as_str(), port)),
        )
        .await
        .map_err(|_| AddressError::Unresolvable(host.to_owned()))?
        .map_err(|_| AddressError::Unresolvable(host.to_owned()))?
        .collect(),
    };
    // Every address must pass: a name that resolves to one public and one private address is
    // refused, whatever order a resolver returns them in.
    for addr in &addrs {
        if let Some(class) = special(addr.ip())
            && !allow_private
        {
            return Err(AddressError::Refused {
                host: host.to_owned(),
                addr: addr.ip(),
                class,
            });
        }
    }
    addrs
        .into_iter()
        .next()
        .ok_or_else(|| AddressError::Unresolvable(host.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(addr: &str) -> Option<&'static str> {
        special(addr.parse().unwrap())
    }

    /// Every block of IANA's IPv4 Special-Purpose Address Registry that is not globally
    /// reachable, at its first and last address, plus multicast.
    #[test]
    fn refuses_the_ipv4_special_purpose_registry() {
        for (first, last, expected) in [
            ("0.0.0.0", "0.0.0.0", "unspecified"),
            ("0.0.0.1", "0.255.255.255", "\"this network\""),
            ("10.0.0.0", "10.255.255.255", "private"),
            (
                "100.64.0.0",
                "100.127.255.255",
                "shared (carrier-grade NAT)",
            ),
            ("127.0.0.0", "127.255.255.255", "loopback"),
            ("169.254.0.0", "169.254.255.255", "link-local"),
            ("172.16.0.0", "172.31.255.255", "private"),
            ("192.0.0.0", "192.0.0.255", "IETF protocol assignment"),
            ("192.0.0.9", "192.0.0.10", "IETF protocol assignment"),
            ("192.0.0.170", "192.0.0.171", "IETF protocol assignment"),
            ("192.0.2.0", "192.0.2.255", "documentation"),
            (
                "192.88.99.0",
                "192.88.99.255",
                "6to4 relay anycast (deprecated)",
            ),
            ("192.168.0.0", "192.168.255.255", "private"),
            ("198.18.0.0", "198.19.255.255", "benchmarking"),
            ("198.51.100.0", "198.51.100.255", "documentation"),
            ("203.0.113.0", "203.0.113.255", "documentation"),
            ("224.0.0.0", "239.255.255.255", "multicast"),
            ("240.0.0.0", "255.255.255.254", "reserved"),
            ("255.255.255.255", "255.255.255.255", "broadcast"),
            ("169.254.169.254", "100.100.100.200", "cloud metadata"),
            ("168.63.129.16", "168.63.129.16", "cloud metadata"),
        ] {
            assert_eq!(class(first), Some(expected), "{first}");
            assert_eq!(class(last), Some(expected), "{last}");
        }
    }

    /// Every block of IANA's IPv6 Special-Purpose Address Registry that is not globally
    /// reachable, at its first and last address, plus multicast, site-local and everything
    /// outside global unicast.
    #[test]
    fn refuses_the_ipv6_special_purpose_registry() {
        for (first, last, expected) in [
            ("::", "::", "unspecified"),
            ("::1", "::1", "loopback"),
            ("::2", "::ffff:ffff", "IPv4-compatible"),
            (
                "64:ff9b:1::",
                "64:ff9b:1:ffff:ffff:ffff:ffff:ffff",
                "NAT64 (local-use)",
            ),
            ("100::", "100::ffff:ffff:ffff:ffff", "discard-only"),
            ("100:0:0:1::", "100:0:0:1:ffff:ffff:ffff:ffff", "dummy"),
            ("2001::", "2001:0:ffff:ffff:ffff:ffff:ffff:ffff", "Teredo"),
            ("2001:1::1", "2001:1::3", "IETF protocol assignment"),
            (
                "2001:2::",
                "2001:2:0:ffff:ffff:ffff:ffff:ffff",
                "IETF protocol assignment",
            ),
            (
                "2001:10::",
                "2001:1f:ffff:ffff:ffff:ffff:ffff:ffff",
                "IETF protocol assignment",
            ),
            (
                "2001:40::",
                "2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff",
                "IETF protocol assignment",
            ),
            (
                "2001:db8::",
                "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
                "documentation",
            ),
            (
                "3fff::",
                "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff",
                "documentation",
            ),
            (
                "5f00::",
                "5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                "segment routing (SRv6)",
            ),
            (
                "fc00::",
                "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                "private (unique local)",
            ),
            ("fd00:ec2::254", "fd00:ec2::254", "cloud metadata"),
            (
                "fe80::",
                "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                "link-local",
            ),
            (
                "fec0::",
                "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                "site-local",
            ),
            (
                "ff00::",
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                "multicast",
            ),
            ("64:ff9b::1:0:0", "64:ff9b:0:ffff::", "reserved"),
            ("::ffff:0:0:0", "::ffff:0:ffff:ffff", "reserved"),
            (
                "4000::",
                "fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                "reserved",
            ),
            (
                "200::",
                "1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                "reserved",
            ),
        ] {
            assert_eq!(class(first), Some(expected), "{first}");
            assert_eq!(class(last), Some(expected), "{last}");
        }
    }

    /// IPv4-mapped, NAT64 (well-known prefix) and 6to4 addresses are judged by the IPv4
    /// address inside them.
    #[test]
    fn judges_embedded_ipv4_by_itself() {
        for (addr, expected) in [
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:169.254.169.254", Some("cloud metadata")),
            ("::ffff:192.0.2.1", Some("documentation")),
            ("64:ff9b::a00:1", Some("private")),
            ("64:ff9b::a9fe:a9fe", Some("cloud metadata")),
            ("64:ff9b::7f00:1", Some("loopback")),
            ("2002:a00:1::1", Some("private")),
            ("2002:7f00:1::", Some("loopback")),
            ("2002:c000:204::1", Some("documentation")),
            ("2002:0:0::1", Some("unspecified")),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::808:808", None),
            ("2002:808:808::1", None),
        ] {
            assert_eq!(class(addr), expected, "{addr}");
        }
    }

    /// Public addresses pass, including the globally reachable blocks of both registries.
    #[test]
    fn passes_public_addresses() {
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "100.128.0.1",
            "100.63.255.255",
            "192.0.1.255",
            "192.0.3.0",
            "192.31.196.1",
            "192.52.193.1",
            "192.175.48.1",
            "198.17.255.255",
            "198.20.0.0",
            "203.0.112.255",
            "223.255.255.255",
            "2606:4700::1111",
            "2001:4860:4860::8888",
            "2001:200::1",
            "2001:3::1",
            "2001:4:112::1",
            "2001:20::1",
            "2001:3f:ffff::1",
            "2620:4f:8000::1",
            "3fff:1000::1",
            "2001:db9::1",
        ] {
            assert_eq!(class(public), None, "{public}");
        }
    }

    #[tokio::test]
    async fn resolution_refuses_private_unless_allowed() {
        let refused = resolve("127.0.0.1", 80, false).await.unwrap_err();
        assert!(matches!(
            refused,
            AddressError::Refused {
                class: "loopback",
                ..
            }
        ));
        assert!(refused.to_string().contains("loopback"));
        let refused = resolve("localhost", 80, false).await.unwrap_err();
        assert!(matches!(refused, AddressError::Refused { .. }), "{refused}");
        let refused = resolve("169.254.169.254", 80, false).await.unwrap_err();
        assert!(matches!(
            refused,
            AddressError::Refused {
                class: "cloud metadata",
                ..
            }
        ));
        assert_eq!(
            resolve("127.0.0.1", 8080, true).await.unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert!(matches!(
            resolve("no-such-host.invalid", 80, true).await.unwrap_err(),
            AddressError::Unresolvable(_)
        ));
    }
}
