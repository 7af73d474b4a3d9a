//! The explorer's API, timed as the page uses it: the first page of the unhealthy objects, the
//! 100th page (reached by following `next`), and the facets, as an unrestricted user
//! (`--single-user`) and as a viewer who sees 1 % of the clusters (at least one: a fleet-wide
//! identity with no bindings, and the `platform` group, bound to `view`, in those clusters). Times are
//! round trips on loopback (the server's time plus a few hundred microseconds of HTTP). Then the
//! page in headless Chromium, as the unrestricted user: the time from the navigation's start to
//! the end of its load event (W3C Navigation Timing `loadEventEnd`: the server-rendered table
//! parsed, its stylesheet and script loaded), an upper bound of its first render (headless
//! Chromium reports no paint timing), the page's own assets cached as a returning user has them.

use anyhow::Context;
use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    time::Instant,
};

use super::{env::BenchEnv, queries::QueryTiming, stats::percentile};
use crate::{
    explorer::USER_HEADER, fleet::rbac::PLATFORM_GROUP, probes, programs, servers::free_port, webdriver::Browser,
};

/// The viewer's role and its fleet-wide user.
const VIEWER: (&str, &str) = ("kcbench_one_percent", "bench-one-percent@example.com");
/// The explorer's own login role, a member of `kubecensus_explorer` (as deployed).
const EXPLORER_LOGIN: &str = "kcbench_explorer";

/// A running `scheduler explore`, stopped on drop.
struct Running(Child, SocketAddr);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start(env: &BenchEnv, registry: &Path, extra: &[&str]) -> anyhow::Result<Running> {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let mut command = Command::new(env.config.bin_dir.join("scheduler"));
    env.services.configure(&mut command, &env.database_url, registry);
    command.arg("explore").arg(format!("--listen={addr}")).args(extra).stdout(Stdio::null()).stderr(Stdio::null());
    let running = Running(command.spawn()?, addr);
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while probes::get(addr, "/livez-of-the-explorer").await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "scheduler explore did not listen on {addr} within 30 s");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(running)
}

/// Times the API for both users, `runs` times each request.
pub async fn time_api(env: &BenchEnv, registry: &Path, runs: usize) -> anyhow::Result<Vec<QueryTiming>> {
    let clusters: Vec<String> =
        sqlx::query_scalar("SELECT name FROM clusters ORDER BY name").fetch_all(&env.pool).await?;
    let visible = &clusters[..clusters.len().div_ceil(100)];
    env.scheduler(registry, &["access", "grant", "--role", VIEWER.0, "--user", VIEWER.1]).await?;
    for cluster in visible {
        env.scheduler(
            registry,
            &[
                "access",
                "grant",
                "--role",
                VIEWER.0,
                "--user",
                VIEWER.1,
                "--group",
                PLATFORM_GROUP,
                "--cluster",
                cluster,
            ],
        )
        .await?;
    }
    let viewer = format!("a viewer of {} of {} clusters", visible.len(), clusters.len());
    sqlx::raw_sql(&format!(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{EXPLORER_LOGIN}') THEN \
         CREATE ROLE {EXPLORER_LOGIN} LOGIN; END IF; END $$; GRANT kubecensus_explorer TO {EXPLORER_LOGIN}"
    ))
    .execute(&env.pool)
    .await?;
    let (_, server) = env.database_url.split_once('@').unwrap_or_default();
    let login_url = format!("--database-url=postgres://{EXPLORER_LOGIN}@{server}");
    let unrestricted = start(env, registry, &["--single-user"]).await?;
    let proxied = start(env, registry, &[&login_url]).await?;
    let mut timings = Vec::new();
    for (who, running, headers) in
        [("unrestricted", &unrestricted, vec![]), (viewer.as_str(), &proxied, vec![(USER_HEADER, VIEWER.1)])]
    {
        let (mut cursor, mut page) = (None::<String>, 1);
        while page < 100 {
            let path = format!(
                "/api/v1/objects?limit=50{}",
                cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default()
            );
            let body: serde_json::Value =
                serde_json::from_str(&probes::get_with(running.1, &path, &headers).await?.body)?;
            match body["next"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
            page += 1;
        }
        let deep = format!("/api/v1/objects?limit=50&cursor={}", cursor.unwrap_or_default());
        for (name, path) in [
            ("first page (50 unhealthy objects, with the total)".to_owned(), "/api/v1/objects?limit=50".to_owned()),
            (format!("page {page}"), deep),
            ("facets of the unhealthy objects".to_owned(), "/api/v1/facets".to_owned()),
            ("first page of all objects (fleet_objects)".to_owned(), "/api/v1/objects?source=all&limit=50".to_owned()),
        ] {
            let answer = probes::get_with(running.1, &path, &headers).await?;
            anyhow::ensure!(answer.status == 200, "{path}: {} {}", answer.status, answer.body);
            let mut ms = Vec::new();
            for _ in 0..runs.max(1) {
                let started = Instant::now();
                probes::get_with(running.1, &path, &headers).await?;
                ms.push(started.elapsed().as_secs_f64() * 1e3);
            }
            let rows_returned =
                serde_json::from_str::<serde_json::Value>(&answer.body)?["objects"].as_array().map_or(0, Vec::len);
            timings.push(QueryTiming {
                name: format!("explorer API, {who}: {name}"),
                sql: format!("GET {path}"),
                rows_returned,
                runs: ms.len(),
                median_ms: percentile(&ms, 0.5),
                max_ms: ms.iter().copied().fold(0.0, f64::max),
            });
        }
    }
    timings.push(first_render(env, unrestricted.1, runs).await?);
    Ok(timings)
}

/// The page's load in headless Chromium (navigation start to `loadEventEnd`), `runs` loads after
/// a warm-up; a figure of 0 runs when Chromium is not installed (`deploy/test-deps.sh` installs
/// it).
async fn first_render(env: &BenchEnv, addr: SocketAddr, runs: usize) -> anyhow::Result<QueryTiming> {
    let name = "explorer page, unrestricted: loaded in headless Chromium (navigation start to loadEventEnd)".to_owned();
    let url = format!("http://{addr}/");
    let mut timing =
        QueryTiming { name, sql: format!("GET {url}"), rows_returned: 0, runs: 0, median_ms: 0.0, max_ms: 0.0 };
    if !programs::chromium().exists() || !programs::chromedriver().exists() {
        tracing::warn!("no Chromium here (deploy/test-deps.sh installs it): the page's render is not timed");
        return Ok(timing);
    }
    let browser = Browser::start(&env.config.dir.join("chromium")).await?;
    let loaded = "const load = performance.getEntriesByType('navigation')[0]; \
                  return [load ? load.loadEventEnd : null, document.querySelectorAll('#objects tbody tr').length]";
    browser.goto(&url).await?;
    let mut ms = Vec::new();
    for _ in 0..runs.max(1) {
        browser.goto(&url).await?;
        let (loaded, rows): (Option<f64>, usize) = serde_json::from_value(browser.run(loaded).await?)?;
        ms.push(loaded.context("Chromium reported no navigation timing")?);
        timing.rows_returned = rows;
    }
    browser.quit().await?;
    timing.runs = ms.len();
    timing.median_ms = percentile(&ms, 0.5);
    timing.max_ms = ms.iter().copied().fold(0.0, f64::max);
    Ok(timing)
}

/// The targets for [`time_api`]'s timings among `timings`: the first page, the deep page
/// and the facets of the unhealthy objects in at most 50 ms for each user, the page loaded in
/// the browser in at most 300 ms.
pub fn verdicts(timings: &[QueryTiming]) -> Vec<super::report::Verdict> {
    let mut verdicts = Vec::new();
    // A page of all objects (`fleet_objects`) has no target of its own.
    for timing in timings.iter().filter(|t| t.name.starts_with("explorer ") && !t.name.contains("all objects")) {
        let limit = if timing.name.starts_with("explorer page") { 300.0 } else { 50.0 };
        verdicts.push(super::report::Verdict {
            target: format!("{}: <= {limit:.0} ms", timing.name),
            measured: match timing.runs {
                0 => "not timed (no Chromium)".to_owned(),
                _ => format!("{:.1} ms median", timing.median_ms),
            },
            met: timing.runs > 0 && timing.median_ms <= limit,
        });
    }
    verdicts
}
