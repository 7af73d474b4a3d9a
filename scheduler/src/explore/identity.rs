//! Who a request is from, and the transaction it runs in as that person's database role.
//!
//! As Kubernetes' request-header authentication (<https://kubernetes.io/docs/reference/access-authn-authz/authentication/#authenticating-proxy>)
//! and oauth2-proxy (`--set-xauthrequest`, `X-Forwarded-User`, `X-Forwarded-Groups`) do it: the
//! proxy authenticates the person and names them in headers; the headers are believed only from
//! the proxy: over mutual TLS with the proxy's client CA (the TLS layer refuses any other
//! peer), or on a loopback listener from a loopback peer (the proxy as a sidecar). A request
//! without the user header gets 401.
//!
//! The user is mapped to a PostgreSQL role by the access-control table `access_identities`: the
//! role whose fleet-wide row (`cluster_name IS NULL`) names that Kubernetes user. The request's
//! transaction is read-only and `SET LOCAL ROLE`s to it (`set_config('role', $1, true)`, the same
//! as `SET LOCAL ROLE` with a bound name), so row-level security filters every statement; no
//! such row gives 403. In `--single-user` mode the transaction keeps the service's own role.

use std::net::SocketAddr;

use axum::http::{HeaderMap, HeaderName};
use sqlx::{PgPool, Postgres, Transaction};

use super::{ExploreArgs, api::ApiError};

/// The longest one request's statements may run.
const STATEMENT_TIMEOUT: &str = "15s";

/// Which requests the service believes, and where it reads their identity.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Identity headers from a trusted proxy.
    Proxy {
        user_header: HeaderName,
        group_header: HeaderName,
        /// `false`: a loopback listener, so the peer must be a loopback address; `true`: mutual
        /// TLS, whose handshake already checked the peer.
        mutual_tls: bool,
    },
    /// One person on a loopback listener, as the service's own role.
    SingleUser,
}

impl Trust {
    /// The trust the arguments configure.
    ///
    /// # Errors
    /// A listener on a non-loopback address without mutual TLS, `--single-user` on one, or a
    /// header name that is not one.
    pub fn from_args(args: &ExploreArgs) -> anyhow::Result<Self> {
        let loopback = args.listen.ip().is_loopback();
        if args.single_user {
            anyhow::ensure!(loopback, "--single-user serves a loopback address only, not {}", args.listen);
            return Ok(Self::SingleUser);
        }
        let mutual_tls = args.client_ca.is_some();
        anyhow::ensure!(
            loopback || mutual_tls,
            "--listen {}: identity headers are trusted only on a loopback address or over mutual TLS \
             (--client-ca, --tls-cert, --tls-key)",
            args.listen
        );
        Ok(Self::Proxy {
            user_header: HeaderName::try_from(&args.user_header)?,
            group_header: HeaderName::try_from(&args.group_header)?,
            mutual_tls,
        })
    }
}

/// The person a request is from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Identity {
    /// The Kubernetes user name the proxy gave; `None` in single-user mode.
    pub user: Option<String>,
    /// The groups the proxy gave.
    pub groups: Vec<String>,
    /// The PostgreSQL role the request runs as; `None`: the service's own (single-user mode).
    pub role: Option<String>,
    pub single_user: bool,
}

/// Reads the identity of a request from `peer` with `headers` (the role is not known yet).
///
/// # Errors
/// 401 when the peer is not trusted or the user header is missing or empty.
pub fn identify(trust: &Trust, peer: SocketAddr, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let (user_header, group_header, mutual_tls) = match trust {
        Trust::SingleUser => return Ok(Identity { user: None, groups: Vec::new(), role: None, single_user: true }),
        Trust::Proxy { user_header, group_header, mutual_tls } => (user_header, group_header, *mutual_tls),
    };
    if !mutual_tls && !peer.ip().is_loopback() {
        return Err(ApiError::unauthorized(format!(
            "the peer {} is not trusted: identity headers are read only from a loopback peer or over mutual TLS",
            peer.ip()
        )));
    }
    let user = headers
        .get(user_header)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|user| !user.is_empty())
        .ok_or_else(|| ApiError::unauthorized(format!("no {user_header} header: the proxy names the user")))?;
    let groups = headers
        .get_all(group_header)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|group| !group.is_empty())
        .map(str::to_owned)
        .collect();
    Ok(Identity { user: Some(user.to_owned()), groups, role: None, single_user: false })
}

/// Begins `identity`'s read-only transaction on `pool`, as its role; fills in the role.
///
/// # Errors
/// 403 when access control is not installed or no fleet-wide `access_identities` row names the
/// user; 500 on a database error.
pub async fn begin(pool: &PgPool, identity: &mut Identity) -> Result<Transaction<'static, Postgres>, ApiError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION READ ONLY").execute(&mut *tx).await?;
    sqlx::query("SELECT set_config('statement_timeout', $1, true)").bind(STATEMENT_TIMEOUT).execute(&mut *tx).await?;
    let Some(user) = identity.user.clone() else { return Ok(tx) };
    let installed: bool =
        sqlx::query_scalar("SELECT to_regclass('access_identities') IS NOT NULL").fetch_one(&mut *tx).await?;
    if !installed {
        return Err(ApiError::forbidden(format!(
            "user `{user}`: access control is not set up in this database (no access_identities table)"
        )));
    }
    let role: Option<String> = sqlx::query_scalar(
        "SELECT role_name FROM access_identities WHERE cluster_name IS NULL AND k8s_user = $1 ORDER BY role_name LIMIT 1",
    )
    .bind(&user)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(role) = role else {
        return Err(ApiError::forbidden(format!(
            "user `{user}` has no database role: `scheduler access grant --role ROLE --user {user}` gives one"
        )));
    };
    sqlx::query("SELECT set_config('role', $1, true)").bind(&role).execute(&mut *tx).await?;
    identity.role = Some(role);
    Ok(tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(mutual_tls: bool) -> Trust {
        Trust::Proxy {
            user_header: HeaderName::from_static("x-remote-user"),
            group_header: HeaderName::from_static("x-remote-group"),
            mutual_tls,
        }
    }

    #[test]
    fn headers_are_read_from_a_trusted_peer_only() {
        let mut headers = HeaderMap::new();
        headers.insert("x-remote-user", "alice@example.com".parse().unwrap());
        headers.append("x-remote-group", "team-a, team-b".parse().unwrap());
        headers.append("x-remote-group", "system:authenticated".parse().unwrap());
        let loopback: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let remote: SocketAddr = "10.0.0.7:5000".parse().unwrap();
        let identity = identify(&proxy(false), loopback, &headers).unwrap();
        assert_eq!(identity.user.as_deref(), Some("alice@example.com"));
        assert_eq!(identity.groups, ["team-a", "team-b", "system:authenticated"]);
        assert_eq!(identify(&proxy(false), remote, &headers).unwrap_err().status.as_u16(), 401);
        assert!(identify(&proxy(true), remote, &headers).is_ok(), "mutual TLS checked the peer");
        assert_eq!(identify(&proxy(false), loopback, &HeaderMap::new()).unwrap_err().status.as_u16(), 401);
    }
}
