//! What a URL we will call (a seller's agent, its `jwks_uri`, a buyer's callback) must look
//! like: `https`, no credentials in it, and no private, loopback or link-local address
//! literal. Names are resolved by Spin at connect time, where the production runtime
//! config's `block_networks = ["private"]` refuses the same networks; these rules refuse
//! what can be seen in the text, with a reason the registering tenant can act on.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// Why a URL is refused, as a sentence for a `422`'s field message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlRefusal {
    NotAUrl,
    NotHttps,
    Credentials,
    PrivateAddress,
}

impl UrlRefusal {
    pub fn message(self) -> &'static str {
        match self {
            UrlRefusal::NotAUrl => "an absolute URL with a host, at most 2048 characters",
            UrlRefusal::NotHttps => "must use https",
            UrlRefusal::Credentials => {
                "must not carry credentials (user:password@); register them as `credentials`"
            }
            UrlRefusal::PrivateAddress => {
                "must not name a private, loopback, link-local or otherwise internal address"
            }
        }
    }
}

/// Checks `url` against the rules. `allow_private_networks` (the application variable of
/// that name, for development and tests) also allows plain `http` and internal addresses;
/// URLs with credentials are refused either way.
pub fn check(url: &str, allow_private_networks: bool) -> Result<(), UrlRefusal> {
    if url.len() > MAX_URL_LEN {
        return Err(UrlRefusal::NotAUrl);
    }
    let uri: http::Uri = url.parse().map_err(|_| UrlRefusal::NotAUrl)?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(UrlRefusal::NotAUrl);
    };
    if authority.as_str().contains('@') {
        return Err(UrlRefusal::Credentials);
    }
    let host = authority.host();
    if host.is_empty() || !matches!(scheme, "http" | "https") {
        return Err(UrlRefusal::NotAUrl);
    }
    if allow_private_networks {
        return Ok(());
    }
    if scheme != "https" {
        return Err(UrlRefusal::NotHttps);
    }
    if internal_host(host) {
        return Err(UrlRefusal::PrivateAddress);
    }
    Ok(())
}

/// A host that is an internal address literal, `localhost`, or a number that resolvers read
/// as an IPv4 address (`2130706433`, `0x7f.1`): no public name ends in a numeric label.
fn internal_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().map_or(true, internal_v6);
    }
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    if let Ok(v4) = host.parse::<Ipv4Addr>() {
        return internal_v4(v4);
    }
    let last = host.rsplit('.').next().unwrap_or("");
    last.bytes().all(|b| b.is_ascii_digit()) || last.starts_with("0x")
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        // Shared address space (carrier-grade NAT), 100.64.0.0/10.
        || (a == 100 && (64..128).contains(&b))
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return internal_v4(v4);
    }
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // Unique local fc00::/7 and link-local fe80::/10.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_https_urls_pass() {
        for ok in [
            "https://seller.example/mcp",
            "https://seller.example:8443/mcp?x=1",
            "https://8.8.8.8/mcp",
            "https://[2001:db8::1]/mcp",
            "https://v2.seller-1.example/mcp",
        ] {
            assert_eq!(check(ok, false), Ok(()), "{ok}");
        }
    }

    #[test]
    fn internal_plain_and_credentialed_urls_are_refused_with_their_reason() {
        use UrlRefusal::*;
        for (url, why) in [
            ("http://seller.example/mcp", NotHttps),
            ("ftp://seller.example/x", NotAUrl),
            ("seller.example/mcp", NotAUrl),
            ("https:///mcp", NotAUrl),
            ("https://user:pw@seller.example/mcp", Credentials),
            ("https://token@seller.example/mcp", Credentials),
            ("https://127.0.0.1/mcp", PrivateAddress),
            ("https://127.8.9.10:3000/mcp", PrivateAddress),
            ("https://10.1.2.3/mcp", PrivateAddress),
            ("https://172.16.0.1/mcp", PrivateAddress),
            ("https://192.168.1.1/mcp", PrivateAddress),
            ("https://169.254.169.254/latest/meta-data", PrivateAddress),
            ("https://100.64.0.1/mcp", PrivateAddress),
            ("https://0.0.0.0/mcp", PrivateAddress),
            ("https://[::1]/mcp", PrivateAddress),
            ("https://[::]/mcp", PrivateAddress),
            ("https://[fd00::1]/mcp", PrivateAddress),
            ("https://[fe80::1]/mcp", PrivateAddress),
            ("https://[::ffff:127.0.0.1]/mcp", PrivateAddress),
            ("https://[::ffff:10.0.0.1]/mcp", PrivateAddress),
            ("https://localhost/mcp", PrivateAddress),
            ("https://api.localhost./mcp", PrivateAddress),
            ("https://2130706433/mcp", PrivateAddress),
            ("https://0x7f.1/mcp", PrivateAddress),
            ("https://127.1/mcp", PrivateAddress),
        ] {
            assert_eq!(check(url, false), Err(why), "{url}");
        }
        assert_eq!(
            check(
                &format!("https://a.example/{}", "x".repeat(MAX_URL_LEN)),
                false
            ),
            Err(NotAUrl)
        );
    }

    #[test]
    fn the_development_switch_allows_plain_http_and_loopback_but_never_credentials() {
        assert_eq!(check("http://127.0.0.1:3000/mcp", true), Ok(()));
        assert_eq!(check("https://10.0.0.1/mcp", true), Ok(()));
        assert_eq!(
            check("http://u:p@127.0.0.1/mcp", true),
            Err(UrlRefusal::Credentials)
        );
        assert_eq!(check("gopher://127.0.0.1/", true), Err(UrlRefusal::NotAUrl));
    }
}
