//! `scheduler explore` as the tests run it: a child process on a free loopback port, and GETs
//! of its JSON API with or without the proxy's identity headers.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use crate::{
    fleet::{Fleet, FleetSpec},
    harness::TestEnv,
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
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let listen = format!("--listen={addr}");
        let mut args = vec!["explore", listen.as_str()];
        args.extend(extra);
        env.spawn_scheduler_command(name, registry, &args)?;
        env.wait_for_log(name, "explorer listening").await;
        Ok(Self { addr })
    }

    /// GETs `path` as `user` (no identity header when `None`): the status and the JSON body.
    pub async fn get(&self, path: &str, user: Option<&str>) -> anyhow::Result<(u16, serde_json::Value)> {
        let headers: Vec<(&str, &str)> = user.map(|user| (USER_HEADER, user)).into_iter().collect();
        let answer = probes::get_with(self.addr, path, &headers).await?;
        let body =
            serde_json::from_str(&answer.body).map_err(|err| anyhow::anyhow!("{path}: {err}: {}", answer.body))?;
        Ok((answer.status, body))
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
