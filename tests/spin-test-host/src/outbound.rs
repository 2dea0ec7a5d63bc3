//! `allowed_outbound_hosts` as Spin 4.0.2 reads it: `scheme://host[:port]`, where the scheme
//! and host may be `*`, a host may be `*.domain` (subdomains only), the port may be `*`, a
//! number or a range `a..b` (end exclusive), and a missing port means the scheme's default.

use anyhow::{Result, anyhow, bail};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Any,
    Subdomains(String),
    Exact(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Port {
    Any,
    Range(u16, u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    scheme: Option<String>,
    host: Host,
    port: Port,
}

pub fn default_port(scheme: &str) -> Option<u16> {
    Some(match scheme {
        "http" => 80,
        "https" => 443,
        "redis" => 6379,
        "postgres" => 5432,
        "mysql" => 3306,
        "mqtt" => 1883,
        _ => return None,
    })
}

impl AllowedHost {
    pub fn parse(entry: &str) -> Result<AllowedHost> {
        let (scheme, rest) = entry.split_once("://").ok_or_else(|| {
            anyhow!("{entry:?} is not an allowed outbound host format: missing scheme")
        })?;
        if scheme.is_empty() || rest.is_empty() || rest.contains('/') {
            bail!("{entry:?} is not an allowed outbound host format");
        }
        let scheme = (scheme != "*").then(|| scheme.to_ascii_lowercase());
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => (h, Some(p)),
            _ => (rest, None),
        };
        let host = if host == "*" {
            Host::Any
        } else if let Some(d) = host.strip_prefix("*.") {
            Host::Subdomains(d.to_ascii_lowercase())
        } else if host.contains('*') {
            bail!("{entry:?}: wildcards are only allowed as the whole host or a `*.` prefix");
        } else {
            Host::Exact(host.to_ascii_lowercase())
        };
        let port = match port {
            Some("*") => Port::Any,
            Some(p) if p.contains("..") => {
                let (a, b) = p.split_once("..").unwrap_or_default();
                let (a, b): (u16, u16) = (a.parse()?, b.parse()?);
                if a >= b {
                    bail!("{entry:?}: empty port range");
                }
                Port::Range(a, b)
            }
            Some(p) => {
                let n: u16 = p
                    .parse()
                    .map_err(|_| anyhow!("{entry:?}: invalid port `{p}`"))?;
                Port::Range(n, n + 1)
            }
            None => {
                let s = scheme
                    .as_deref()
                    .ok_or_else(|| anyhow!("{entry:?}: a wildcard scheme needs a port"))?;
                let d = default_port(s)
                    .ok_or_else(|| anyhow!("{entry:?}: no default port for `{s}`"))?;
                Port::Range(d, d + 1)
            }
        };
        Ok(AllowedHost { scheme, host, port })
    }

    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let scheme_ok = self
            .scheme
            .as_deref()
            .is_none_or(|s| s.eq_ignore_ascii_case(scheme));
        let host_ok = match &self.host {
            Host::Any => true,
            Host::Exact(h) => h.trim_start_matches('[').trim_end_matches(']') == host,
            Host::Subdomains(d) => host.ends_with(&format!(".{d}")),
        };
        let port_ok = match self.port {
            Port::Any => true,
            Port::Range(a, b) => (a..b).contains(&port),
        };
        scheme_ok && host_ok && port_ok
    }
}

/// The allow-list of one component, resolved with the app's variable values.
#[derive(Debug, Clone, Default)]
pub struct AllowList(Vec<AllowedHost>);

impl AllowList {
    pub fn resolve(
        entries: &[String],
        variables: &std::collections::HashMap<String, String>,
    ) -> Result<AllowList> {
        entries
            .iter()
            .map(|e| AllowedHost::parse(&crate::manifest::expand(e, variables)?))
            .collect::<Result<Vec<_>>>()
            .map(AllowList)
    }

    pub fn allows_url(&self, uri: &http::Uri) -> bool {
        let Some(scheme) = uri.scheme_str() else {
            return false;
        };
        let Some(host) = uri.host() else { return false };
        let Some(port) = uri.port_u16().or_else(|| default_port(scheme)) else {
            return false;
        };
        self.0.iter().any(|h| h.allows(scheme, host, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(entry: &str, url: &str) -> bool {
        let list = AllowList(vec![AllowedHost::parse(entry).unwrap()]);
        list.allows_url(&url.parse().unwrap())
    }

    #[test]
    fn spin_syntax() {
        assert!(allows("https://*:*", "https://seller.example:8443/mcp"));
        assert!(!allows("https://*:*", "http://seller.example/mcp"));
        assert!(allows("https://example.com", "https://example.com/x"));
        assert!(!allows("https://example.com", "https://example.com:8443/x"));
        assert!(allows("http://127.0.0.1:*", "http://127.0.0.1:4567/x"));
        assert!(!allows("http://127.0.0.1:*", "http://localhost:4567/x"));
        assert!(allows("https://*.example.com", "https://a.example.com/"));
        assert!(!allows("https://*.example.com", "https://example.com/"));
        assert!(allows("*://localhost:3000..3010", "http://localhost:3009/"));
        assert!(!allows(
            "*://localhost:3000..3010",
            "http://localhost:3010/"
        ));
        assert!(AllowedHost::parse("").is_err());
        assert!(AllowedHost::parse("example.com").is_err());
        assert!(AllowedHost::parse("*://example.com").is_err());
        assert!(AllowedHost::parse("https://ex*ample.com").is_err());
    }
}
