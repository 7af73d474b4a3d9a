//! `NATS_URL` read as the official NATS clients read it: nats.go's `processUrlString` and
//! `Connect` (<https://github.com/nats-io/nats.go/blob/main/nats.go>), which the `nats` CLI and
//! most deployments' settings follow.
//!
//! - A comma-separated list of servers (`nats://a:4222,nats://b:4222`), each trimmed of spaces
//!   and of a trailing `/`; the client connects to one and fails over to the others.
//! - Each server `nats://`, `tls://` (TLS required), `ws://` or `wss://` (WebSocket), or a bare
//!   `host[:port]`, taken as `nats://`; the port defaults to 4222 (80 and 443 for `ws` and `wss`).
//! - Credentials in a URL: `nats://user:password@host` (user and password) or
//!   `nats://token@host` (a token), percent-decoded (`%40` for an `@` in a password), as nats.go
//!   decodes them with Go's `net/url`.
//!
//! async-nats takes neither the list (`ToServerAddrs for str` parses one URL) nor the
//! credentials of a URL (its connector sends only those of `ConnectOptions`), so they are done
//! here: the servers are passed as a list, without their credentials, and the credentials as
//! `ConnectOptions::user_and_password` or `token`. Every server of a list that carries
//! credentials carries the same (one connection has one identity).

use async_nats::ServerAddr;
use secrecy::{ExposeSecret, SecretString};

/// Credentials written into `NATS_URL`.
#[derive(Clone)]
pub enum UrlAuth {
    UserAndPassword(String, SecretString),
    Token(SecretString),
}

impl UrlAuth {
    /// What the credentials are, for messages.
    pub fn method(&self) -> &'static str {
        match self {
            Self::UserAndPassword(..) => "user and password in NATS_URL",
            Self::Token(_) => "token in NATS_URL",
        }
    }

    fn same(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::UserAndPassword(a, p), Self::UserAndPassword(b, q)) => {
                a == b && p.expose_secret() == q.expose_secret()
            }
            (Self::Token(a), Self::Token(b)) => a.expose_secret() == b.expose_secret(),
            _ => false,
        }
    }
}

/// The servers of `NATS_URL` without their credentials, and those credentials.
pub struct NatsServers {
    pub addresses: Vec<ServerAddr>,
    pub auth: Option<UrlAuth>,
    /// The servers as they may be shown: `nats://host:4222, tls://other:4222`.
    pub shown: String,
}

/// How to write `NATS_URL`, for the errors.
const HOW: &str = "write NATS_URL as nats://host:4222 (or tls://, ws://, wss://, or host:port), several \
                   separated by commas, credentials as nats://user:password@host or nats://token@host";

impl NatsServers {
    /// Reads `NATS_URL`.
    ///
    /// # Errors
    /// An empty entry, a URL that does not parse or has another scheme, or two servers with
    /// different credentials; the message says how to write it and never shows a credential.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut servers = Self { addresses: Vec::new(), auth: None, shown: String::new() };
        let mut shown = Vec::new();
        for (index, entry) in text.split(',').map(|entry| entry.trim().trim_end_matches('/')).enumerate() {
            if entry.is_empty() {
                return Err(format!("NATS_URL has an empty server (number {}): {HOW}", index + 1));
            }
            let with_scheme = if entry.contains("://") { entry.to_owned() } else { format!("nats://{entry}") };
            let mut url = url::Url::parse(&with_scheme).map_err(|err| {
                format!("NATS_URL's server {} is not a URL ({err}): {HOW}", super::without_credentials(entry))
            })?;
            if !["nats", "tls", "ws", "wss"].contains(&url.scheme()) || url.host_str().is_none() {
                return Err(format!(
                    "NATS_URL's server {} is not a NATS server URL: {HOW}",
                    super::without_credentials(entry)
                ));
            }
            if let Some(auth) = auth_of(&url)? {
                match &servers.auth {
                    Some(first) if !first.same(&auth) => {
                        return Err(format!(
                            "the servers of NATS_URL carry different credentials: {HOW}, the same in each"
                        ));
                    }
                    _ => servers.auth = Some(auth),
                }
            }
            let _ = url.set_username("");
            let _ = url.set_password(None);
            shown.push(url.to_string().trim_end_matches('/').to_owned());
            let address = ServerAddr::from_url(url).map_err(|err| format!("NATS_URL: {err}: {HOW}"))?;
            servers.addresses.push(address);
        }
        servers.shown = shown.join(", ");
        Ok(servers)
    }
}

/// The credentials of one server's URL, percent-decoded: a user alone is a token (nats.go).
fn auth_of(url: &url::Url) -> Result<Option<UrlAuth>, String> {
    let decode = |part: &str| percent_encoding::percent_decode_str(part).decode_utf8_lossy().into_owned();
    let user = decode(url.username());
    Ok(match url.password().map(decode) {
        Some(_) if user.is_empty() => {
            return Err(format!("a server of NATS_URL has a password without a user: {HOW}"));
        }
        Some(password) => Some(UrlAuth::UserAndPassword(user, SecretString::from(password))),
        None if user.is_empty() => None,
        None => Some(UrlAuth::Token(SecretString::from(user))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The servers (host:port and whether TLS is required) and credentials read from `text`.
    fn read(text: &str) -> Result<(Vec<String>, Option<String>), String> {
        let servers = NatsServers::parse(text)?;
        let addresses =
            servers.addresses.iter().map(|a| format!("{}://{}:{}", a.scheme(), a.host(), a.port())).collect();
        let auth = servers.auth.map(|auth| match auth {
            UrlAuth::UserAndPassword(user, password) => format!("user {user} password {}", password.expose_secret()),
            UrlAuth::Token(token) => format!("token {}", token.expose_secret()),
        });
        Ok((addresses, auth))
    }

    fn ok(addresses: &[&str], auth: Option<&str>) -> Result<(Vec<String>, Option<String>), String> {
        Ok((addresses.iter().map(|a| (*a).to_owned()).collect(), auth.map(str::to_owned)))
    }

    #[test]
    fn every_form_nats_go_accepts_is_read_as_it_reads_it() {
        let cases = [
            ("nats://127.0.0.1:4222", ok(&["nats://127.0.0.1:4222"], None)),
            ("nats://127.0.0.1", ok(&["nats://127.0.0.1:4222"], None)),
            ("127.0.0.1:4223", ok(&["nats://127.0.0.1:4223"], None)),
            ("localhost", ok(&["nats://localhost:4222"], None)),
            ("tls://nats.example:4443/", ok(&["tls://nats.example:4443"], None)),
            ("ws://nats.example", ok(&["ws://nats.example:80"], None)),
            ("wss://nats.example:8443", ok(&["wss://nats.example:8443"], None)),
            ("nats://[::1]:4222", ok(&["nats://::1:4222"], None)),
            ("nats://a:4222, nats://b:4222 ,c:4223", ok(&["nats://a:4222", "nats://b:4222", "nats://c:4223"], None)),
            ("nats://kc:s3cret@h:4222", ok(&["nats://h:4222"], Some("user kc password s3cret"))),
            ("nats://kc:p%40ss%2Fw+rd@h", ok(&["nats://h:4222"], Some("user kc password p@ss/w+rd"))),
            ("nats://t0ken@h", ok(&["nats://h:4222"], Some("token t0ken"))),
            (
                "kc:pw@h1:4222,kc:pw@h2:4222,h3",
                ok(&["nats://h1:4222", "nats://h2:4222", "nats://h3:4222"], Some("user kc password pw")),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(read(text), expected, "{text}");
        }
    }

    #[test]
    fn what_no_client_accepts_is_refused_with_how_to_write_it_and_no_credential() {
        let cases = [
            ("nats://a:4222,,nats://b:4222", "NATS_URL has an empty server (number 2)"),
            ("", "NATS_URL has an empty server (number 1)"),
            ("http://kc:s3cret@h:4222", "NATS_URL's server http://***@h:4222 is not a NATS server URL"),
            ("nats://h:notaport", "NATS_URL's server nats://h:notaport is not a URL (invalid port number)"),
            ("nats://kc:s3cret@a,nats://kc:other@b", "the servers of NATS_URL carry different credentials"),
            ("nats://:s3cret@h", "a server of NATS_URL has a password without a user"),
        ];
        for (text, start) in cases {
            let err = NatsServers::parse(text).err().unwrap_or_default();
            assert!(err.starts_with(start) && err.contains(HOW), "{text}: {err}");
            assert!(!err.contains("s3cret") && !err.contains("other"), "{text}: {err}");
        }
    }

    #[test]
    fn the_servers_are_shown_without_their_credentials() {
        let servers = NatsServers::parse("nats://kc:s3cret@a:4222,tls://b:4443/").unwrap();
        assert_eq!(servers.shown, "nats://a:4222, tls://b:4443");
    }
}
