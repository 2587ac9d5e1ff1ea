//! Which upstreams a tenant may point a route at: the SSRF guard of routes created through the
//! management API.
//!
//! A tenant who can name an upstream can make the gateway connect anywhere the gateway can: its
//! own loopback services, the cloud metadata endpoint (169.254.169.254), the private network,
//! or the gateway's own listeners (a loop, or a free pass to its management API). So an API
//! route's upstream must resolve only to public addresses, unless the operator allowed the host
//! or address (`[routes_api] upstream_allow`). It is checked when the route is written and again
//! at every connection, on the addresses actually connected to: a DNS answer can change between
//! the two (DNS rebinding), and a name that resolves to one public and one private address is
//! refused as a whole.
//!
//! Operator routes from the TOML file are trusted and never checked.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Why an address is not a tenant's to connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forbidden {
    Loopback,
    /// 169.254.0.0/16 and fe80::/10: where cloud metadata services live.
    LinkLocal,
    /// RFC 1918, carrier-grade NAT (100.64.0.0/10), unique local (fc00::/7), benchmarking.
    Private,
    /// 0.0.0.0/8, ::, multicast, broadcast, reserved: nothing a public origin uses.
    NotUnicast,
    /// One of the gateway's own listeners.
    OwnListener,
}

impl Forbidden {
    pub fn as_str(self) -> &'static str {
        match self {
            Forbidden::Loopback => "a loopback address",
            Forbidden::LinkLocal => "a link-local address (cloud metadata)",
            Forbidden::Private => "a private address",
            Forbidden::NotUnicast => "not a public unicast address",
            Forbidden::OwnListener => "one of this gateway's own listeners",
        }
    }
}

/// Why an upstream was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream host `{host}` resolves to {addr}, {}; ask the operator to allow it", why.as_str())]
    Forbidden {
        host: String,
        addr: IpAddr,
        why: Forbidden,
    },
    #[error("upstream host `{0}` does not resolve")]
    Unresolvable(String),
}

/// What a tenant's upstream may resolve to.
#[derive(Debug, Clone, Default)]
pub struct UpstreamPolicy {
    /// Hosts (as written in the route, case-insensitive) and addresses the operator allows
    /// whatever they resolve to.
    pub allow: Vec<String>,
    /// The gateway's own listeners, refused even where their addresses are public.
    pub own: Vec<SocketAddr>,
}

/// The class of an address a tenant may not reach, or `None` for a public unicast one.
pub fn classify(ip: IpAddr) -> Option<Forbidden> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => {
            // An IPv4 address in IPv6 clothing is judged as the IPv4 address it reaches.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return classify_v4(v4);
            }
            let seg = v6.segments();
            // NAT64 (64:ff9b::/96) reaches the embedded IPv4 address.
            if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let o = v6.octets();
                return classify_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            if v6.is_loopback() {
                Some(Forbidden::Loopback)
            } else if v6.is_unspecified() || v6.is_multicast() {
                Some(Forbidden::NotUnicast)
            } else if (seg[0] & 0xffc0) == 0xfe80 {
                Some(Forbidden::LinkLocal)
            } else if (seg[0] & 0xfe00) == 0xfc00 {
                Some(Forbidden::Private)
            } else {
                None
            }
        }
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Forbidden> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some(Forbidden::Loopback)
    } else if ip.is_link_local() {
        Some(Forbidden::LinkLocal)
    } else if ip.is_private()
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
    {
        Some(Forbidden::Private)
    } else if o[0] == 0 || ip.is_broadcast() || ip.is_multicast() || o[0] >= 240 {
        Some(Forbidden::NotUnicast)
    } else {
        None
    }
}

impl UpstreamPolicy {
    /// The policy `[routes_api]` and the listeners of `config` make.
    pub fn for_config(config: &crate::config::Config) -> Self {
        UpstreamPolicy {
            allow: config.routes_api.upstream_allow.clone(),
            own: vec![
                config.server.listen,
                config.server.admin_listen,
                config.server.metrics_listen,
            ],
        }
    }

    fn allows_host(&self, host: &str) -> bool {
        self.allow.iter().any(|a| a.eq_ignore_ascii_case(host))
    }

    /// Checks every address `host` resolved to; the first refused one refuses the host. The
    /// gateway's own listeners are refused whatever the allowlist says: allowing a backend on
    /// 127.0.0.1 must not open the management API to tenants.
    pub fn check_addrs(&self, host: &str, addrs: &[SocketAddr]) -> Result<(), UpstreamError> {
        let host_allowed = self.allows_host(host);
        for addr in addrs {
            let own = self.own.iter().any(|o| {
                o.port() == addr.port()
                    && (o.ip() == addr.ip() || o.ip().is_unspecified() || addr.ip().is_loopback())
            });
            let why = if own {
                Some(Forbidden::OwnListener)
            } else if host_allowed
                || self
                    .allow
                    .iter()
                    .any(|a| a.parse::<IpAddr>() == Ok(addr.ip()))
            {
                None
            } else {
                classify(addr.ip())
            };
            if let Some(why) = why {
                return Err(UpstreamError::Forbidden {
                    host: host.to_string(),
                    addr: addr.ip(),
                    why,
                });
            }
        }
        Ok(())
    }

    /// Resolves `host:port` and checks every address: the addresses to connect to, all allowed.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, UpstreamError> {
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map(|a| a.collect())
                .unwrap_or_default(),
        };
        if addrs.is_empty() {
            return Err(UpstreamError::Unresolvable(host.to_string()));
        }
        self.check_addrs(host, &addrs)?;
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why(ip: &str) -> Option<Forbidden> {
        classify(ip.parse().unwrap())
    }

    #[test]
    fn every_kind_of_internal_address_is_refused() {
        for (ip, want) in [
            ("127.0.0.1", Forbidden::Loopback),
            ("127.8.9.10", Forbidden::Loopback),
            ("::1", Forbidden::Loopback),
            ("::ffff:127.0.0.1", Forbidden::Loopback),
            ("169.254.169.254", Forbidden::LinkLocal),
            ("fe80::1", Forbidden::LinkLocal),
            ("64:ff9b::a9fe:a9fe", Forbidden::LinkLocal),
            ("10.1.2.3", Forbidden::Private),
            ("172.16.0.1", Forbidden::Private),
            ("172.31.255.255", Forbidden::Private),
            ("192.168.1.1", Forbidden::Private),
            ("100.64.0.1", Forbidden::Private),
            ("198.18.0.1", Forbidden::Private),
            ("fd00::1", Forbidden::Private),
            ("::ffff:10.0.0.1", Forbidden::Private),
            ("0.0.0.0", Forbidden::NotUnicast),
            ("::", Forbidden::NotUnicast),
            ("224.0.0.1", Forbidden::NotUnicast),
            ("255.255.255.255", Forbidden::NotUnicast),
            ("240.0.0.1", Forbidden::NotUnicast),
        ] {
            assert_eq!(why(ip), Some(want), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
        ] {
            assert_eq!(why(ip), None, "{ip}");
        }
    }

    #[test]
    fn one_bad_address_refuses_the_host_unless_the_operator_allowed_it() {
        let policy = UpstreamPolicy {
            allow: vec!["internal.example".into(), "10.0.0.7".into()],
            own: vec!["0.0.0.0:8402".parse().unwrap()],
        };
        let mixed: Vec<SocketAddr> = vec![
            "93.184.216.34:443".parse().unwrap(),
            "10.0.0.1:443".parse().unwrap(),
        ];
        assert!(matches!(
            policy.check_addrs("rebind.example", &mixed),
            Err(UpstreamError::Forbidden {
                why: Forbidden::Private,
                ..
            })
        ));
        assert!(policy.check_addrs("INTERNAL.example", &mixed).is_ok());
        assert!(policy
            .check_addrs("x", &["10.0.0.7:80".parse().unwrap()])
            .is_ok());
        // Our own listener, on a public address.
        assert!(matches!(
            policy.check_addrs("me.example", &["93.184.216.34:8402".parse().unwrap()]),
            Err(UpstreamError::Forbidden {
                why: Forbidden::OwnListener,
                ..
            })
        ));
    }
}
