//! `DATABASE_URL` read as libpq reads a connection string
//! (<https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING>): a URI,
//! `postgresql://[user[:password]@][host][:port][/dbname][?param=value&...]` (or `postgres://`),
//! or keyword/value pairs, `host=db.example dbname=kubecensus user=kc` (values with spaces in
//! single quotes, `\'` and `\\` escaped). sqlx's `PgConnectOptions` reads only the URI form, and
//! ignores, with a log line, a parameter it does not know; here both forms become the URI it
//! reads, and what it cannot do is refused with how to write it instead:
//!
//! - the settings sqlx takes: `host` (a name, an address, `[::1]`, or a Unix-socket directory
//!   such as `/var/run/postgresql`, in the URI's host as `%2Fvar%2Frun%2Fpostgresql` or as
//!   `?host=`), `hostaddr`, `port`, `dbname`, `user`, `password`, `sslmode` (`disable`, `allow`,
//!   `prefer`, `require`, `verify-ca`, `verify-full`), `sslrootcert`, `sslcert`, `sslkey`,
//!   `application_name`, `options` (`-c search_path=x`);
//! - refused: several hosts (`host=a,b`, `postgresql://a:5432,b:5432/`), and libpq's other
//!   settings (`connect_timeout`, `target_session_attrs`, `service`, `keepalives`, ...) or an
//!   unknown one, each by name.
//!
//! Unlike libpq, no host (`postgresql:///kubecensus`, `dbname=kubecensus`) means `PGHOST`, else
//! `localhost` over TCP, not the default socket directory: write `host=/var/run/postgresql` for
//! the socket.

/// The settings sqlx's `PgConnectOptions` takes (besides its own aliases such as `ssl-mode`).
const SUPPORTED: [&str; 13] = [
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "application_name",
    "options",
    "statement-cache-capacity",
];

/// How to write `DATABASE_URL`, for the errors.
const HOW: &str = "write DATABASE_URL as postgresql://user@host:5432/dbname?sslmode=verify-full or as \
                   'host=host port=5432 dbname=dbname user=user'";

/// The URI sqlx reads for a libpq connection string (either form).
///
/// # Errors
/// Not a PostgreSQL URI nor keyword/value pairs, several hosts, or a setting sqlx does not take;
/// the message names it, says how to write it, and never shows a password.
pub fn libpq_url(text: &str) -> Result<String, String> {
    let text = text.trim();
    let url = if text.starts_with("postgresql://") || text.starts_with("postgres://") {
        text.to_owned()
    } else if text.contains("://") {
        let scheme = text.split("://").next().unwrap_or_default();
        return Err(format!("DATABASE_URL's scheme `{scheme}://` is not PostgreSQL's: {HOW}"));
    } else {
        keyword_url(text)?
    };
    let after_scheme = &url[url.find("://").map_or(0, |end| end + 3)..];
    let authority = &after_scheme[..after_scheme.find(['/', '?', '#']).unwrap_or(after_scheme.len())];
    if authority.rsplit('@').next().is_some_and(|hosts| hosts.contains(',')) {
        return Err(several_hosts());
    }
    let mut parsed = url::Url::parse(&url)
        .map_err(|err| format!("DATABASE_URL {} is not a PostgreSQL URL ({err}): {HOW}", shown(text)))?;
    for (key, value) in parsed.query_pairs() {
        if key == "host" && value.contains(',') {
            return Err(several_hosts());
        }
        if !SUPPORTED.contains(&key.as_ref()) && !key.contains('-') && !key.starts_with("options[") {
            return Err(format!(
                "DATABASE_URL's setting `{key}` is not one kubecensus supports (it takes {}); remove it: {HOW}",
                SUPPORTED[..12].join(", ")
            ));
        }
    }
    // sqlx would take an empty host as the host "".
    let has_host = parsed.query_pairs().any(|(key, _)| key == "host" || key == "hostaddr");
    if parsed.host_str().unwrap_or_default().is_empty() && !has_host {
        let host = std::env::var("PGHOST").ok().filter(|host| !host.is_empty());
        parsed.query_pairs_mut().append_pair("host", host.as_deref().unwrap_or("localhost"));
        return Ok(parsed.to_string());
    }
    Ok(url)
}

fn several_hosts() -> String {
    format!(
        "DATABASE_URL names several hosts; kubecensus connects to one: give one host (a name that \
         resolves to the primary, or a load balancer in front of them): {HOW}"
    )
}

/// A keyword/value connection string as the equivalent URI: every setting as a query parameter.
fn keyword_url(text: &str) -> Result<String, String> {
    let mut url = url::Url::parse("postgresql://").expect("a URL");
    {
        let mut query = url.query_pairs_mut();
        for (key, value) in keyword_pairs(text)? {
            query.append_pair(&key, &value);
        }
    }
    Ok(url.to_string())
}

/// The pairs of a keyword/value string: `key = value`, spaces around `=` allowed, a value in
/// single quotes with `\'` and `\\` (libpq's `conninfo_parse`).
fn keyword_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!("DATABASE_URL: `{key}` has no `=value` (not a URL, so keyword=value pairs): {HOW}"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("DATABASE_URL: the value of `{key}` has no closing quote: {HOW}")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(if c == '\\' { chars.next().unwrap_or('\\') } else { c });
            }
        }
        pairs.push((key, value));
    }
}

/// A connection string (either form) fit for logs and errors: a URI's `user:password@` and any
/// `password` setting replaced by `***`.
pub fn shown(text: &str) -> String {
    if text.contains("://") {
        let url = super::without_credentials(text);
        return match url::Url::parse(&url) {
            Ok(mut parsed) if parsed.query_pairs().any(|(key, _)| key == "password") => {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(k, v)| (k.to_string(), if k == "password" { "***".into() } else { v.to_string() }))
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
                parsed.to_string()
            }
            _ => url,
        };
    }
    match keyword_pairs(text) {
        Ok(pairs) => pairs
            .iter()
            .map(|(key, value)| if key == "password" { format!("{key}=***") } else { format!("{key}={value}") })
            .collect::<Vec<_>>()
            .join(" "),
        Err(_) => "(a connection string that does not parse)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::postgres::{PgConnectOptions, PgSslMode};

    use super::*;

    /// What sqlx reads from `text`: host (or socket), port, user, database, SSL mode,
    /// application name, options.
    fn read(text: &str) -> Result<String, String> {
        let options = PgConnectOptions::from_str(&libpq_url(text)?).map_err(|err| err.to_string())?;
        let sslmode = match options.get_ssl_mode() {
            PgSslMode::Disable => "disable",
            PgSslMode::Allow => "allow",
            PgSslMode::Prefer => "prefer",
            PgSslMode::Require => "require",
            PgSslMode::VerifyCa => "verify-ca",
            PgSslMode::VerifyFull => "verify-full",
        };
        Ok(format!(
            "{}:{} user={} db={} ssl={sslmode} app={} options={}",
            options.get_socket().map_or(options.get_host().to_owned(), |s| s.display().to_string()),
            options.get_port(),
            options.get_username(),
            options.get_database().unwrap_or("-"),
            options.get_application_name().unwrap_or("-"),
            options.get_options().unwrap_or("-"),
        ))
    }

    #[test]
    fn every_form_libpq_accepts_is_read_as_libpq_reads_it() {
        let cases = [
            (
                "postgres://kc@127.0.0.1:5432/kubecensus",
                "127.0.0.1:5432 user=kc db=kubecensus ssl=prefer app=- options=-",
            ),
            (
                "postgresql://kc:pw@db.example/kc?sslmode=verify-full",
                "db.example:5432 user=kc db=kc ssl=verify-full app=- options=-",
            ),
            ("postgresql://kc@[::1]:5433/kc", "[::1]:5433 user=kc db=kc ssl=prefer app=- options=-"),
            (
                "postgresql://kc@%2Fvar%2Frun%2Fpostgresql/kc",
                "/var/run/postgresql:5432 user=kc db=kc ssl=prefer app=- options=-",
            ),
            (
                "postgresql:///kc?host=/var/run/postgresql&user=kc",
                "/var/run/postgresql:5432 user=kc db=kc ssl=prefer app=- options=-",
            ),
            (
                "postgresql://kc@db/kc?application_name=kubecensus&options=-c%20search_path%3Dinv",
                "db:5432 user=kc db=kc ssl=prefer app=kubecensus options=-c search_path=inv",
            ),
            (
                "host=db port=5433 dbname=kc user=kc sslmode=require",
                "db:5433 user=kc db=kc ssl=require app=- options=-",
            ),
            (
                "host = /var/run/postgresql dbname=kc user=kc",
                "/var/run/postgresql:5432 user=kc db=kc ssl=prefer app=- options=-",
            ),
            (
                "host=db dbname='my db' user=kc application_name='it\\'s' options='-c statement_timeout=5s'",
                "db:5432 user=kc db=my db ssl=prefer app=it's options=-c statement_timeout=5s",
            ),
            (
                "hostaddr=10.0.0.5 dbname=kc user=kc sslmode=disable",
                "10.0.0.5:5432 user=kc db=kc ssl=disable app=- options=-",
            ),
            ("dbname=kc user=kc", "localhost:5432 user=kc db=kc ssl=prefer app=- options=-"),
            ("postgresql:///kc?user=kc", "localhost:5432 user=kc db=kc ssl=prefer app=- options=-"),
        ];
        for (text, expected) in cases {
            assert_eq!(read(text).as_deref(), Ok(expected), "{text}");
        }
    }

    #[test]
    fn what_kubecensus_cannot_do_is_refused_with_how_to_write_it() {
        let cases = [
            ("mysql://kc:pw@db/kc", "DATABASE_URL's scheme `mysql://` is not PostgreSQL's"),
            ("postgresql://kc@a:5432,b:5432/kc", "DATABASE_URL names several hosts"),
            ("postgresql://kc@a,b/kc", "DATABASE_URL names several hosts"),
            ("host=a,b dbname=kc", "DATABASE_URL names several hosts"),
            ("postgresql://kc@db/kc?connect_timeout=10", "DATABASE_URL's setting `connect_timeout` is not one"),
            ("host=db dbname=kc target_session_attrs=read-write", "DATABASE_URL's setting `target_session_attrs`"),
            ("host=db dbname", "DATABASE_URL: `dbname` has no `=value`"),
            ("host=db password='unclosed", "DATABASE_URL: the value of `password` has no closing quote"),
        ];
        for (text, start) in cases {
            let err = libpq_url(text).unwrap_err();
            assert!(err.starts_with(start) && err.contains(HOW), "{text}: {err}");
            assert!(!err.contains("pw") && !err.contains("unclosed"), "{text}: {err}");
        }
    }

    #[test]
    fn a_password_is_never_shown() {
        assert_eq!(shown("host=db password='s3 cret' dbname=kc"), "host=db password=*** dbname=kc");
        assert_eq!(shown("postgresql://kc:s3cret@db/kc?sslmode=require"), "postgresql://***@db/kc?sslmode=require");
        assert_eq!(shown("postgresql://db/kc?user=kc&password=s3cret"), "postgresql://db/kc?user=kc&password=***");
    }
}
