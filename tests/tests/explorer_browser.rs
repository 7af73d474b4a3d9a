//! The explorer's page in headless Chromium (Debian's, driven by ChromeDriver over WebDriver) on
//! the real services and a simulated fleet, used with the keyboard only: the banner while a
//! cluster is not loaded yet, the filter bar, a facet, every page of the unhealthy objects once
//! (`n`, then back with `p`), and the detail pane's kubectl command. Writes a screenshot
//! (`$EXPLORER_SCREENSHOT`, e.g. docs/explorer.png, else into the test's folder). Then two
//! users with different bindings, each in a browser whose requests carry their identity header
//! as the proxy's would: the facets, a filter and every page show exactly the rows their role
//! may list (compared with SQL as that role), also while a refresh swaps the clusters' rows.

use std::collections::BTreeSet;

use futures::FutureExt;
use kubecensus_tests::{
    explorer::{Explorer, USER_HEADER, Viewers, as_role, fleet_with_worker},
    webdriver::Browser,
};

const TABLES: [&str; 4] =
    ["kubernetes_pods", "kubernetes_deployments", "kubernetes_nodes", "kubernetes_custom_resources"];

/// `(cluster, uid)` of the rows the page's table shows.
async fn rows(browser: &Browser) -> Vec<(String, String)> {
    let rows = browser
        .run("return Array.from(document.querySelectorAll('#objects tbody tr')).map(r => [r.cells[0].textContent, r.dataset.uid])")
        .await
        .unwrap();
    serde_json::from_value(rows).unwrap()
}

/// Every row the page lists from `url` on, following `n` to the last page; and how many pages.
async fn every_page(browser: &Browser, url: &str) -> (Vec<(String, String)>, usize) {
    browser.goto(url).await.unwrap();
    let (mut seen, mut pages) = (rows(browser).await, 1);
    while browser.find("#next").await.unwrap().is_some() {
        browser.navigating(browser.press("n")).await.unwrap();
        seen.extend(rows(browser).await);
        pages += 1;
    }
    (seen, pages)
}

/// The values the first facet (clusters) shows, without their counts.
async fn facet_clusters(browser: &Browser) -> BTreeSet<String> {
    let mut clusters = BTreeSet::new();
    for item in browser.all("#facets details:first-of-type li").await.unwrap() {
        let text = browser.text(&item).await.unwrap();
        clusters.insert(text.rsplit_once(' ').map_or(text.as_str(), |(value, _)| value).to_owned());
    }
    clusters
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_with_the_keyboard_banner_filters_facets_pages_and_detail() {
    let (mut env, _fleet, registry) = fleet_with_worker().await.unwrap();
    let refresh = |clusters: &'static [&'static str]| {
        let mut args = vec!["refresh", "--wait"];
        for table in TABLES {
            args.extend(["--table", table]);
        }
        for cluster in clusters {
            args.extend(["--cluster", cluster]);
        }
        args
    };
    env.scheduler(&registry, &refresh(&["sim-01", "sim-02"])).await.unwrap();
    let explorer = Explorer::start(&mut env, "explore", &registry, &["--single-user"]).await.unwrap();
    let base = format!("http://{}", explorer.addr);
    let browser = Browser::start(&env.dir.join("chromium")).await.unwrap();

    // While sim-03 has no snapshot, the banner says so.
    browser.goto(&format!("{base}/")).await.unwrap();
    let freshness = explorer.ok("/api/v1/freshness", None).await.unwrap();
    let body = browser.run("return document.body.innerText").await.unwrap();
    let banner = browser.find("#banner").await.unwrap().unwrap_or_else(|| panic!("no banner: {freshness} {body}"));
    let banner = browser.text(&banner).await.unwrap();
    assert!(banner.starts_with("2 of 3 clusters loaded (not yet: sim-03)"), "{banner}");
    let who = browser.text(&browser.find("#who").await.unwrap().unwrap()).await.unwrap();
    assert!(who.contains("Single-user mode"), "{who}");
    env.scheduler(&registry, &refresh(&["sim-03"])).await.unwrap();
    browser.goto(&format!("{base}/")).await.unwrap();
    assert!(browser.find("#banner").await.unwrap().is_none(), "every cluster loaded: no banner");

    // The filter bar from the keyboard: `/`, then the fields in tab order, Enter submits.
    browser.press("/").await.unwrap();
    let focused = browser.run("return document.activeElement.name").await.unwrap();
    assert_eq!(focused, "cluster", "`/` focuses the filter bar's first field");
    let kind = browser.find("input[name=kind]").await.unwrap().unwrap();
    browser.navigating(browser.type_into(&kind, "Kustomization\u{E007}")).await.unwrap();
    assert!(browser.url().await.unwrap().contains("kind=Kustomization"), "the URL keeps the filter");
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM fleet_unhealthy_objects WHERE kind = 'Kustomization'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    let shown = browser.text(&browser.find("#total").await.unwrap().unwrap()).await.unwrap();
    assert_eq!(shown, format!("{total} objects"));
    for kind in browser.all("#objects tbody td:nth-child(3)").await.unwrap() {
        assert_eq!(browser.text(&kind).await.unwrap(), "Kustomization");
    }

    // A facet link narrows to its cluster, with the count it showed.
    let facet = browser.find("#facets details:first-of-type li").await.unwrap().unwrap();
    let text = browser.text(&facet).await.unwrap();
    let (cluster, count) = text.rsplit_once(' ').unwrap();
    let link = browser.find("#facets details:first-of-type li a").await.unwrap().unwrap();
    browser.navigating(browser.click(&link)).await.unwrap();
    let url = browser.url().await.unwrap();
    assert!(url.contains(&format!("cluster={cluster}")) && url.contains("kind=Kustomization"), "{url}");
    let shown = browser.text(&browser.find("#total").await.unwrap().unwrap()).await.unwrap();
    assert_eq!(shown, format!("{count} objects"));

    // Every unhealthy object, 7 a page, each once and in order, with `n`; and back with `p`.
    let expected: Vec<(String, String)> = sqlx::query_as(
        "SELECT cluster_name, uid FROM fleet_unhealthy_objects ORDER BY cluster_name, namespace, name, uid",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let (seen, pages) = every_page(&browser, &format!("{base}/?limit=7")).await;
    assert_eq!(seen, expected, "the pages show every unhealthy object once, in order");
    assert!(pages > 3);
    let last = rows(&browser).await;
    browser.navigating(browser.press("p")).await.unwrap();
    let before_last = rows(&browser).await;
    assert_eq!(before_last.len(), 7);
    assert_eq!(seen[seen.len() - last.len() - 7..seen.len() - last.len()], before_last[..]);

    // The detail pane: `j` to the first row, Enter opens it.
    browser.navigating(browser.press("j\u{E007}")).await.unwrap();
    assert!(browser.url().await.unwrap().contains("object="));
    let kubectl = browser.text(&browser.find("#kubectl").await.unwrap().expect("a detail pane")).await.unwrap();
    assert!(kubectl.starts_with("kubectl --context sim-0"), "{kubectl}");

    let png = browser.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let path = std::env::var_os("EXPLORER_SCREENSHOT").map_or_else(|| env.dir.join("explorer.png"), Into::into);
    std::fs::write(path, png).unwrap();
    browser.quit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_page_through_exactly_their_rows_while_a_refresh_runs() {
    let (mut env, _fleet, registry) = fleet_with_worker().await.unwrap();
    env.scheduler(&registry, &["refresh", "--wait"]).await.unwrap();
    let viewers = Viewers::grant(&env, &registry).await.unwrap();
    let explorer = Explorer::start(&mut env, "explore", &registry, &[&viewers.database_url_arg]).await.unwrap();
    let base = format!("http://{}", explorer.addr);
    let mut listed = Vec::new();
    for (n, (user, role)) in viewers.users.iter().enumerate() {
        let browser = Browser::start(&env.dir.join(format!("chromium-{n}"))).await.unwrap();
        browser.set_headers(&[(USER_HEADER, user)]).await.unwrap();
        browser.goto(&format!("{base}/")).await.unwrap();
        let who = browser.text(&browser.find("#who").await.unwrap().unwrap()).await.unwrap();
        assert!(who.contains(role.as_str()), "the page names {role}: {who}");

        let unhealthy = as_role(&env.pool, role, "fleet_unhealthy_objects", "true").await.unwrap();
        let clusters: BTreeSet<String> = unhealthy.iter().map(|(cluster, _)| cluster.clone()).collect();
        assert_eq!(facet_clusters(&browser).await, clusters, "{user}: the facets name only clusters {role} sees");
        assert_eq!(every_page(&browser, &format!("{base}/?limit=5")).await.0, unhealthy, "{user}: unhealthy");
        let deployments = as_role(&env.pool, role, "fleet_objects", "kind = 'Deployment'").await.unwrap();
        let url = format!("{base}/?source=all&kind=Deployment&limit=4");
        assert_eq!(every_page(&browser, &url).await.0, deployments, "{user}: kind=Deployment");

        // Every page of pods, again and again while a refresh of every (cluster, table) swaps
        // the rows under the cursor: each pass lists each pod the role may see once, in order.
        let pods = as_role(&env.pool, role, "fleet_objects", "kind = 'Pod'").await.unwrap();
        let now = "SELECT clock_timestamp()";
        let paging_from: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(now).fetch_one(&env.pool).await.unwrap();
        let mut refresh = std::pin::pin!(env.scheduler(&registry, &["refresh", "--wait"]));
        assert!(refresh.as_mut().now_or_never().is_none(), "the refresh has started");
        let mut passes = 0;
        let refreshed = loop {
            let (seen, _) = every_page(&browser, &format!("{base}/?source=all&kind=Pod&limit=10")).await;
            assert_eq!(seen, pods, "{user}: pass {passes} lists the pods {role} may see, each once, in order");
            passes += 1;
            if let Some(refreshed) = refresh.as_mut().now_or_never() {
                break refreshed;
            }
        };
        refreshed.unwrap();
        // The passes ran from before the refresh's first swap to after its last one.
        let swapped: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM runs WHERE trigger = 'manual' AND status = 'succeeded' AND finished_at > $1",
        )
        .bind(paging_from)
        .fetch_one(&env.pool)
        .await
        .unwrap();
        assert!(swapped > 0, "{user}: {passes} passes, while the refresh swapped {swapped} (cluster, table)s");
        listed.push(pods);
        browser.quit().await.unwrap();
    }
    assert!(!listed[0].is_empty() && listed[0].len() < listed[1].len(), "different bindings, different pods");
    viewers.drop_roles(&env.pool).await;
}
