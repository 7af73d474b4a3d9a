//! Which HTTP proxy, if any, a cluster's API server is reached through: the choice kubectl
//! (client-go) makes, so a cluster kubectl reaches is reached the same way.
//!
//! - An explicit proxy (a kubeconfig cluster's `proxy-url`, a registry entry's `proxy_url`) is
//!   used for every request to that cluster, whatever the environment says: client-go sets
//!   `rest.Config.Proxy = http.ProxyURL(u)` for it (`tools/clientcmd/client_config.go`).
//! - Otherwise the environment, by the rules of Go's `http.ProxyFromEnvironment`
//!   (`golang.org/x/net/http/httpproxy/proxy.go`): `HTTPS_PROXY` (else `https_proxy`) for an
//!   `https://` server, `HTTP_PROXY` (else `http_proxy`) for an `http://` one; a value without a
//!   scheme means `http://`. No proxy for `localhost` or a loopback IP, nor for a server that
//!   `NO_PROXY` (else `no_proxy`) covers: comma-separated entries, each `*` (every host), an IP,
//!   a CIDR, or a domain, optionally with `:port`; `example.com` covers it and its subdomains,
//!   `.example.com` and `*.example.com` only its subdomains.
//!
//! kube 5 reads the same variables itself, but checks `NO_PROXY` against the proxy's address
//! instead of the server's, and applies it to `proxy-url` too (kube-rs/kube#1203 added the
//! check), so the worker decides here and hands kube only the answer; kube's `http-proxy`
//! feature then opens the `CONNECT` tunnel (and sends the URL's user and password as
//! `Proxy-Authorization: Basic`). Proxy URLs are only ever shown without their user and
//! password ([`redacted`]).

use std::net::IpAddr;

use http::Uri;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// A proxy URL as a user wrote it (it may hold a user and password): shown only redacted.
#[derive(Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct ProxyUrl(pub String);

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_text(&self.0))
    }
}

/// The proxy settings of the environment (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY` and their
/// lower-case forms), read once.
#[derive(Default)]
pub struct ProxyEnv {
    https: Option<String>,
    http: Option<String>,
    no_proxy: Vec<NoProxyEntry>,
}

/// One `NO_PROXY` entry, parsed as Go's `httpproxy` does.
#[derive(Debug, PartialEq)]
enum NoProxyEntry {
    /// `*`: no host is proxied.
    All,
    /// `10.0.0.0/8`, `fd00::/8`.
    Network(IpNet),
    /// `10.0.0.1`, `10.0.0.1:6443`, `[fd00::1]:6443`; an empty port matches any port.
    Ip { ip: IpAddr, port: String },
    /// `.example.com` (from `example.com`, `.example.com` or `*.example.com`), lower-case;
    /// `matches_itself` when written without the leading dot.
    Domain { suffix: String, port: String, matches_itself: bool },
}

impl ProxyEnv {
    /// Reads the process environment; a variable that is empty counts as unset (Go's `getEnvAny`).
    pub fn from_env() -> Self {
        let var =
            |names: [&str; 2]| names.into_iter().find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()));
        Self::new(
            var(["HTTPS_PROXY", "https_proxy"]),
            var(["HTTP_PROXY", "http_proxy"]),
            var(["NO_PROXY", "no_proxy"]).as_deref().unwrap_or_default(),
        )
    }

    /// Settings from the values of `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY`.
    pub fn new(https: Option<String>, http: Option<String>, no_proxy: &str) -> Self {
        Self { https, http, no_proxy: parse_no_proxy(no_proxy) }
    }

    /// The environment's proxy for `server`, as its text; `None` for a direct connection.
    fn proxy_for(&self, server: &Uri) -> Option<&str> {
        let proxy = match server.scheme_str() {
            Some("https") => self.https.as_deref(),
            Some("http") => self.http.as_deref(),
            _ => None,
        }?;
        let host = server.host()?.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let port = server.port_u16().or(match server.scheme_str() {
            Some("https") => Some(443),
            _ => Some(80),
        });
        let port = port.map(|p| p.to_string()).unwrap_or_default();
        self.use_proxy(&host, &port).then_some(proxy)
    }

    /// Go's `useProxy`: never for localhost or a loopback IP, else unless a `NO_PROXY` entry
    /// covers `host:port` (`host` lower-case, without IPv6 brackets).
    fn use_proxy(&self, host: &str, port: &str) -> bool {
        let ip = host.parse::<IpAddr>().ok();
        if host == "localhost" || ip.is_some_and(is_loopback) {
            return false;
        }
        let same_port = |wanted: &str| wanted.is_empty() || wanted == port;
        !self.no_proxy.iter().any(|entry| match entry {
            NoProxyEntry::All => true,
            NoProxyEntry::Network(network) => ip.is_some_and(|ip| network.contains(&ip)),
            NoProxyEntry::Ip { ip: wanted, port } => ip == Some(*wanted) && same_port(port),
            NoProxyEntry::Domain { suffix, port, matches_itself } => {
                (host.ends_with(suffix.as_str()) || *matches_itself && host == &suffix[1..]) && same_port(port)
            }
        })
    }
}

/// An IPv4 address in 127.0.0.0/8, `::1`, or an IPv4-mapped loopback (Go's `IP.IsLoopback`).
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// Parses `NO_PROXY` as Go's `httpproxy` (`config.init`): entries are trimmed and lower-cased,
/// empty ones skipped; a `*` anywhere means every host.
fn parse_no_proxy(text: &str) -> Vec<NoProxyEntry> {
    let mut entries = Vec::new();
    for entry in text.split(',').map(|e| e.trim().to_ascii_lowercase()).filter(|e| !e.is_empty()) {
        if entry == "*" {
            return vec![NoProxyEntry::All];
        }
        if let Ok(network) = entry.parse::<IpNet>() {
            entries.push(NoProxyEntry::Network(network));
            continue;
        }
        let (host, port) = split_host_port(&entry).unwrap_or((&entry, ""));
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            entries.push(NoProxyEntry::Ip { ip, port: port.to_owned() });
            continue;
        }
        let host = host.strip_prefix('*').filter(|rest| rest.starts_with('.')).unwrap_or(host);
        if host.is_empty() {
            continue;
        }
        let matches_itself = !host.starts_with('.');
        let suffix = if matches_itself { format!(".{host}") } else { host.to_owned() };
        entries.push(NoProxyEntry::Domain { suffix, port: port.to_owned(), matches_itself });
    }
    entries
}

/// Go's `net.SplitHostPort` for the forms `NO_PROXY` entries take: `host:port`, `[v6]:port`;
/// `None` when there is no port (or an unbracketed IPv6 address).
fn split_host_port(entry: &str) -> Option<(&str, &str)> {
    if let Some(rest) = entry.strip_prefix('[') {
        return rest.split_once("]:");
    }
    let (host, port) = entry.rsplit_once(':')?;
    (!host.contains(':')).then_some((host, port))
}

/// The proxy for a cluster whose API server is `server`: `explicit` (its `proxy-url` or
/// `proxy_url`) when given, else the environment's. The error (an unsupported scheme, a value
/// that is no URL) names the setting and shows the URL redacted.
pub fn choose(server: &Uri, explicit: Option<&str>, env: &ProxyEnv) -> Result<Option<Uri>, String> {
    let (setting, text) = match explicit.filter(|text| !text.is_empty()) {
        Some(text) => ("proxy-url", text),
        None => match env.proxy_for(server) {
            Some(text) => (if server.scheme_str() == Some("http") { "HTTP_PROXY" } else { "HTTPS_PROXY" }, text),
            None => return Ok(None),
        },
    };
    parse_proxy(text).map(Some).map_err(|why| format!("{setting} {}: {why}", redact_text(text)))
}

/// A proxy URL, as Go's `parseProxy`: `host:port` without a scheme means `http://host:port`.
/// Only `http` and `https` proxies are supported (kube's `socks5` feature is not enabled).
fn parse_proxy(text: &str) -> Result<Uri, String> {
    let parsed = text.parse::<Uri>().ok().filter(|uri| uri.scheme().is_some() && uri.host().is_some());
    let uri = match parsed {
        Some(uri) => uri,
        None => format!("http://{text}").parse::<Uri>().map_err(|_| "not a URL".to_owned())?,
    };
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some_and(|host| !host.is_empty()) => Ok(uri),
        Some("http" | "https") => Err("has no host".into()),
        Some("socks5" | "socks5h") => Err("SOCKS proxies are not supported, only http:// and https:// ones".into()),
        _ => Err("the scheme must be http or https".into()),
    }
}

/// A proxy URI without its user and password: what logs and errors may show.
pub fn redacted(uri: &Uri) -> String {
    redact_text(&uri.to_string())
}

/// `scheme://user:password@host:port/…` with `user:password@` replaced by `***@`.
fn redact_text(text: &str) -> String {
    let (scheme, rest) = text.split_once("://").map_or(("", text), |(scheme, rest)| (scheme, rest));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return text.to_owned() };
    let separator = if scheme.is_empty() { "" } else { "://" };
    format!("{scheme}{separator}***@{}", &rest[at + 1..])
}

/// A kubeconfig context's cluster `proxy-url`: of `context`, or of the current context when
/// `None`.
pub fn kubeconfig_proxy_url(kubeconfig: &kube::config::Kubeconfig, context: Option<&str>) -> Option<String> {
    let context = context.or(kubeconfig.current_context.as_deref())?;
    let cluster = &kubeconfig.contexts.iter().find(|c| c.name == context)?.context.as_ref()?.cluster;
    kubeconfig.clusters.iter().find(|c| &c.name == cluster)?.cluster.as_ref()?.proxy_url.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corp(no_proxy: &str) -> ProxyEnv {
        ProxyEnv::new(Some("http://proxy.corp:3128".into()), Some("proxy.corp:8080".into()), no_proxy)
    }

    fn proxied(env: &ProxyEnv, server: &str) -> Option<String> {
        choose(&server.parse().unwrap(), None, env).unwrap().map(|uri| uri.to_string())
    }

    #[test]
    fn no_proxy_follows_go_httpproxy() {
        // The host/match pairs of Go's own table (net/http proxy_test.go, UseProxyTests) with
        // NO_PROXY="foobar.com, .barbaz.net", plus CIDR, IP, port and wildcard forms.
        let env = corp("foobar.com, .barbaz.net, 10.0.0.0/8, 192.168.1.7, example.org:6443, *.svc, [fd00::1]:443");
        let cases = [
            ("https://localhost:6443", false),
            ("https://127.0.0.1", false),
            ("https://127.0.0.2", false),
            ("https://[::1]", false),
            ("https://[::2]", true),
            ("https://barbaz.net", true), // `.barbaz.net` covers only subdomains
            ("https://www.barbaz.net", false),
            ("https://foobar.com", false),
            ("https://www.foobar.com", false),
            ("https://FOOBAR.com:443", false),
            ("https://foofoobar.com", true),
            ("https://baz.com", true),
            ("https://localhost.net", true),
            ("https://local.localhost", true),
            ("https://barbarbaz.net", true),
            ("https://10.1.2.3:6443", false),
            ("https://11.1.2.3", true),
            ("https://192.168.1.7:6443", false),
            ("https://192.168.1.8", true),
            ("https://example.org:6443", false),
            ("https://example.org", true), // another port
            ("https://api.example.org:6443", false),
            ("https://kubernetes.default.svc", false),
            ("https://svc", true),
            ("https://[fd00::1]", false),
            ("https://[fd00::1]:6443", true),
        ];
        for (server, proxy) in cases {
            assert_eq!(proxied(&env, server).is_some(), proxy, "{server}");
        }
        assert_eq!(proxied(&env, "https://api.corp").as_deref(), Some("http://proxy.corp:3128/"));
        assert_eq!(
            proxied(&env, "http://api.corp").as_deref(),
            Some("http://proxy.corp:8080/"),
            "HTTP_PROXY for http://"
        );
        assert_eq!(proxied(&ProxyEnv::new(None, None, ""), "https://api.corp"), None);
        assert!(proxied(&corp("a.com, *, b.com"), "https://api.corp").is_none(), "* covers every host");
    }

    #[test]
    fn an_explicit_proxy_wins_over_the_environment_and_no_proxy() {
        let env = corp("*");
        let server: Uri = "https://127.0.0.1:6443".parse().unwrap();
        let chosen = choose(&server, Some("http://127.0.0.1:3128"), &env).unwrap();
        assert_eq!(chosen.unwrap().to_string(), "http://127.0.0.1:3128/");
        assert!(choose(&server, Some(""), &env).unwrap().is_none(), "an empty proxy-url is no proxy-url");
    }

    #[test]
    fn unsupported_proxies_are_refused_without_showing_credentials() {
        let server: Uri = "https://api.corp".parse().unwrap();
        let env = ProxyEnv::default();
        let err = choose(&server, Some("socks5://me:hunter2@proxy:1080"), &env).unwrap_err();
        assert_eq!(
            err,
            "proxy-url socks5://***@proxy:1080: SOCKS proxies are not supported, only http:// and https:// ones"
        );
        let env = ProxyEnv::new(Some("ftp://me:hunter2@proxy".into()), None, "");
        let err = choose(&server, None, &env).unwrap_err();
        assert_eq!(err, "HTTPS_PROXY ftp://***@proxy: the scheme must be http or https");
    }

    #[test]
    fn redaction_drops_user_and_password_only() {
        let uri: Uri = "http://me:p%40ss@proxy.corp:3128".parse().unwrap();
        assert_eq!(redacted(&uri), "http://***@proxy.corp:3128/");
        assert_eq!(redact_text("me:pw@proxy:3128"), "***@proxy:3128");
        assert_eq!(redact_text("http://proxy:3128/a@b"), "http://proxy:3128/a@b");
        assert_eq!(format!("{:?}", ProxyUrl("https://u:secret@p:1".into())), "https://***@p:1");
    }

    #[test]
    fn a_kubeconfig_proxy_url_is_read_from_the_context_cluster() {
        let kubeconfig: kube::config::Kubeconfig = serde_norway::from_str(
            "clusters: [{name: a, cluster: {server: 'https://a', proxy-url: 'http://p:1'}}, {name: b, cluster: {server: 'https://b'}}]\n\
             contexts: [{name: ca, context: {cluster: a, user: u}}, {name: cb, context: {cluster: b, user: u}}]\n\
             current-context: ca\n",
        )
        .unwrap();
        assert_eq!(kubeconfig_proxy_url(&kubeconfig, None).as_deref(), Some("http://p:1"));
        assert_eq!(kubeconfig_proxy_url(&kubeconfig, Some("cb")), None);
    }
}
