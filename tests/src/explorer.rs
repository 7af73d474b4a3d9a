//! `scheduler explore` as the tests run it: a child process on a free port, and GETs of its JSON
//! API with or without the proxy's identity headers, over HTTP or HTTPS.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::ClientConfig;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::{
    fleet::{
        Fleet, FleetSpec,
        rbac::{DEVELOPER, PLATFORM_GROUP},
    },
    harness::{TestEnv, with_database},
    probes,
    servers::free_port,
};

/// A private environment with the explorer tests' simulated fleet (3 clusters, 30 pods and 30
/// custom resources each), its registry, and a worker that has prepared the schema.
pub async fn fleet_with_worker() -> anyhow::Result<(TestEnv, Fleet, PathBuf)> {
    let mut env = TestEnv::new().await?;
    let fleet =
        Fleet::start(FleetSpec { clusters: 3, pods: 30, custom_resources: 30, ..FleetSpec::default() }, &env.dir)
            .await?;
    let registry = env.dir.join("clusters.yaml");
    env.spawn_worker("worker", &registry, &[])?;
    env.wait_for_log("worker", "worker started").await;
    Ok((env, fleet, registry))
}

/// The header the explorer reads the user from, by default (oauth2-proxy's).
pub const USER_HEADER: &str = "X-Forwarded-User";

/// A running explorer.
#[derive(Debug, Clone, Copy)]
pub struct Explorer {
    pub addr: SocketAddr,
}

impl Explorer {
    /// Starts `scheduler explore` with `extra` arguments, logging to `<dir>/<name>.log`, and
    /// waits until it listens.
    pub async fn start(env: &mut TestEnv, name: &str, registry: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_on(env, name, registry, Ipv4Addr::LOCALHOST.into(), extra).await
    }

    /// [`Self::start`] with `--listen` on `ip` (`0.0.0.0`: every interface, reachable from other
    /// machines); [`Self::addr`] is then on `127.0.0.1`, which the tests' certificates name.
    pub async fn start_on(
        env: &mut TestEnv,
        name: &str,
        registry: &Path,
        ip: IpAddr,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let listen = format!("--listen={}", SocketAddr::new(ip, port));
        let mut args = vec!["explore", listen.as_str()];
        args.extend(extra);
        env.spawn_scheduler_command(name, registry, &args)?;
        env.wait_for_log(name, "explorer listening").await;
        Ok(Self { addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)) })
    }

    /// GETs `path` as `user` (no identity header when `None`): the status and the JSON body.
    pub async fn get(&self, path: &str, user: Option<&str>) -> anyhow::Result<(u16, serde_json::Value)> {
        json(path, probes::get_with(self.addr, path, &identity_headers(user)).await?)
    }

    /// [`Self::get`] over HTTPS as the TLS client `tls` ([`probes::tls_client`]).
    pub async fn get_tls(
        &self,
        path: &str,
        user: Option<&str>,
        tls: &Arc<ClientConfig>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        json(path, probes::get_tls(self.addr, path, &identity_headers(user), tls).await?)
    }

    /// GETs `path` as `user` and fails unless it answers 200; returns the JSON body.
    pub async fn ok(&self, path: &str, user: Option<&str>) -> anyhow::Result<serde_json::Value> {
        let (status, body) = self.get(path, user).await?;
        anyhow::ensure!(status == 200, "{path}: {status} {body}");
        Ok(body)
    }

    /// Every object of the listing at `query` (without `cursor`), page by page of `limit`,
    /// following `next`; checks that each page's total is the same.
    pub async fn all_pages(
        &self,
        query: &str,
        limit: u32,
        user: Option<&str>,
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        let (mut objects, mut cursor, mut total) = (Vec::new(), None::<String>, None);
        loop {
            let mut path = format!("/api/v1/objects?{query}&limit={limit}");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let page = self.ok(&path, user).await?;
            let page_total = page["total"].as_i64();
            anyhow::ensure!(total.is_none() || total == page_total, "{path}: the total changed: {page}");
            total = page_total;
            objects.extend(page["objects"].as_array().cloned().unwrap_or_default());
            match page["next"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(objects),
            }
        }
    }
}

/// The proxy's identity header naming `user`; none when `None`.
fn identity_headers(user: Option<&str>) -> Vec<(&'static str, &str)> {
    user.map(|user| (USER_HEADER, user)).into_iter().collect()
}

/// The status and the JSON body of the answer to a GET of `path`.
fn json(path: &str, answer: probes::Answer) -> anyhow::Result<(u16, serde_json::Value)> {
    let body = serde_json::from_str(&answer.body).map_err(|err| anyhow::anyhow!("{path}: {err}: {}", answer.body))?;
    Ok((answer.status, body))
}

/// Two viewers with different bindings in the simulated clusters, each a PostgreSQL role made
/// by `scheduler access grant`: the developer who may edit one namespace
/// ([`crate::fleet::rbac::DEVELOPER_NAMESPACE`]) and a platform user whose group may view
/// everything; and the explorer's own login role, a member of `kubecensus_explorer` only. The
/// test's own role is granted both viewer roles, to run the oracle queries as each
/// ([`as_role`]).
pub struct Viewers {
    /// `(Kubernetes user, PostgreSQL role)` of the developer, then of the platform user.
    pub users: [(String, String); 2],
    /// The explorer's login role.
    pub login: String,
    /// `--database-url=...` for `scheduler explore` as the login role.
    pub database_url_arg: String,
}

impl Viewers {
    /// Grants both viewers and makes the login role (names unique to this call).
    pub async fn grant(env: &TestEnv, registry: &Path) -> anyhow::Result<Self> {
        let id = &Uuid::new_v4().simple().to_string()[..10];
        let (developer, platform, login) =
            (format!("kcx_dev_{id}"), format!("kcx_plat_{id}"), format!("kcx_login_{id}"));
        let platform_user = "pat@example.com";
        env.scheduler(registry, &["access", "grant", "--role", &developer, "--user", DEVELOPER]).await?;
        env.scheduler(
            registry,
            &["access", "grant", "--role", &platform, "--user", platform_user, "--group", PLATFORM_GROUP],
        )
        .await?;
        sqlx::raw_sql(&format!(
            "CREATE ROLE {login} LOGIN; GRANT kubecensus_explorer TO {login}; GRANT {developer}, {platform} TO CURRENT_USER"
        ))
        .execute(&env.pool)
        .await?;
        let database_url_arg = format!(
            "--database-url={}",
            with_database(&format!("postgres://{login}@127.0.0.1:5432/postgres"), &env.services.database)
        );
        Ok(Self {
            users: [(DEVELOPER.to_owned(), developer), (platform_user.to_owned(), platform)],
            login,
            database_url_arg,
        })
    }

    /// Drops the three roles (they belong to the whole server, not the test's database).
    pub async fn drop_roles(&self, pool: &PgPool) {
        for role in [&self.users[0].1, &self.users[1].1, &self.login] {
            let _ = sqlx::raw_sql(&format!("DROP OWNED BY {role}; DROP ROLE {role}")).execute(pool).await;
        }
    }
}

/// `(cluster_name, uid)` of the rows of `relation` where `condition` holds, as `role` sees them,
/// in the explorer's default order.
pub async fn as_role(
    pool: &PgPool,
    role: &str,
    relation: &str,
    condition: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('role', $1, true)").bind(role).execute(&mut *tx).await?;
    let rows = sqlx::query(&format!(
        "SELECT cluster_name, coalesce(uid, '') AS uid FROM {relation} WHERE {condition}
         ORDER BY cluster_name, namespace, name, uid"
    ))
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.iter().map(|r| (r.get("cluster_name"), r.get("uid"))).collect())
}
