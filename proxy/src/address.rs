//! Resolve once, check every address, dial exactly what was checked: the defence against SSRF
//! and DNS rebinding. Loopback, private, link-local, shared, cloud metadata and other special
//! addresses are refused unless the policy allows private addresses for that host.

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
pub fn special(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return special_v4(v4);
            }
            let s = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                Some("cloud metadata")
            } else if s[0] & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if s[0] & 0xff00 == 0xff00 {
                Some("multicast")
            } else if s[0] == 0x64 && s[1] == 0xff9b {
                // NAT64 can reach IPv4 private space.
                Some("NAT64")
            } else if s[0] == 0x2002 {
                Some("6to4")
            } else if s[0] == 0x2001 && s[1] == 0 {
                Some("Teredo")
            } else if s[0] & 0xffc0 == 0xfec0 {
                Some("site-local")
            } else if s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0 {
                Some("discard-only")
            } else if s[..6] == [0, 0, 0, 0, 0, 0] {
                // IPv4-compatible (::a.b.c.d) and the rest of ::/96.
                Some("IPv4-compatible")
            } else {
                None
            }
        }
    }
}

fn special_v4(v4: Ipv4Addr) -> Option<&'static str> {
    let o = v4.octets();
    if v4.is_loopback() {
        Some("loopback")
    } else if o == [169, 254, 169, 254] || o == [100, 100, 100, 200] || o == [168, 63, 129, 16] {
        Some("cloud metadata")
    } else if v4.is_private() {
        Some("private")
    } else if v4.is_link_local() {
        Some("link-local")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("shared (carrier-grade NAT)")
    } else if v4.is_unspecified() || o[0] == 0 {
        Some("unspecified")
    } else if v4.is_broadcast() || v4.is_multicast() || o[0] >= 240 {
        Some("broadcast, multicast or reserved")
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        Some("IETF protocol assignment")
    } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
        Some("benchmarking")
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
    let bare = crate::host::normalize(host);
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

    #[test]
    fn classifies_special_addresses() {
        for (addr, class) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "cloud metadata"),
            ("169.254.1.1", "link-local"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("0.0.0.0", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "cloud metadata"),
            ("fd00:ec2::254", "cloud metadata"),
            ("fc00::1", "private (unique local)"),
            ("fe80::1", "link-local"),
            ("::127.0.0.1", "IPv4-compatible"),
            ("2001:0:4136:e378::1", "Teredo"),
            ("fec0::1", "site-local"),
            ("168.63.129.16", "cloud metadata"),
        ] {
            assert_eq!(special(addr.parse().unwrap()), Some(class), "{addr}");
        }
        for public in ["1.1.1.1", "8.8.8.8", "2606:4700::1111", "100.128.0.1"] {
            assert_eq!(special(public.parse().unwrap()), None, "{public}");
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
