//! The explorer's one HTML page, rendered on the server from the same queries as the API: a
//! filter bar (a plain GET form, so the URL is the filter), facet counts (links that add a
//! filter), the table, previous and next links, a banner while the copy is incomplete, and a
//! detail pane (`object=<cluster>/<uid>`) with the `kubectl` command for the object. It works
//! without JavaScript and without a mouse; `explorer.js` (vendored, no build step) only adds
//! keys: `/` the filter bar, `j`/`k` the rows, `n`/`p` the pages.

use std::{fmt::Write, net::SocketAddr};

use axum::{
    extract::{ConnectInfo, RawQuery},
    http::{HeaderMap, header},
    response::{Html, IntoResponse, Response},
};
use kubecensus::store::explore::{
    Source,
    list::{Count, Object},
    status::{Completeness, RBAC_STALE_SECONDS},
};

use super::{
    Shared,
    api::{self, PageData},
    params,
};

/// The vendored script.
const SCRIPT: &str = include_str!("explorer.js");
/// The page's style sheet.
const STYLE: &str = include_str!("explorer.css");
/// How many names of loading or failing clusters the banner lists before "and N more".
const BANNER_NAMES: usize = 5;

/// `GET /vendor/explorer.js`.
pub async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT).into_response()
}

/// `GET /?<filter>`: the page; an error is the API's JSON error.
pub async fn index(
    state: Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Html<String>, api::ApiError> {
    let mut pairs = api::pairs(query)?;
    let object = pairs.iter().position(|(name, _)| name == "object").map(|at| pairs.remove(at).1);
    let detail = object.and_then(|o| o.split_once('/').map(|(c, u)| (c.to_owned(), u.to_owned())));
    let data = api::page_data(&state.0, peer, &headers, &pairs, detail).await?;
    Ok(Html(render(&data, &pairs)))
}

/// Text for HTML (element content and quoted attributes).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The value of the first pair named `name`.
fn value<'a>(pairs: &'a [(String, String)], name: &str) -> &'a str {
    pairs.iter().find(|(n, _)| n == name).map_or("", |(_, v)| v.as_str())
}

fn render(data: &PageData, pairs: &[(String, String)]) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>kubecensus explorer</title>\
         <meta name=\"viewport\" content=\"width=device-width\"><style>{STYLE}</style></head><body>\
         <header><h1>kubecensus explorer</h1><p id=\"who\">{}</p></header>",
        who(data)
    );
    if let Some(text) = banner(&data.completeness) {
        let _ = write!(html, "<p id=\"banner\" role=\"alert\">{}</p>", escape(&text));
    }
    html.push_str(&filter_bar(data, pairs));
    html.push_str("<main><nav id=\"facets\" aria-label=\"facets\">");
    for (title, name, counts) in [
        ("Clusters", "cluster", &data.facets.clusters),
        ("Namespaces", "namespace", &data.facets.namespaces),
        ("Kinds", "kind", &data.facets.kinds),
        ("Health", "health", &data.facets.health),
    ] {
        html.push_str(&facet(title, name, counts, pairs));
    }
    html.push_str("</nav><section id=\"results\">");
    let _ = write!(html, "<p id=\"total\">{} objects</p>", data.page.total);
    html.push_str(&table(&data.page.objects, pairs));
    html.push_str(&pager(data, pairs));
    html.push_str("</section>");
    if let Some(detail) = &data.detail {
        let _ = write!(
            html,
            "<aside id=\"detail\" aria-label=\"object\"><h2>{} {}</h2><p>{}</p>\
             <p>On its cluster:</p><pre><code id=\"kubectl\">{}</code></pre>",
            escape(&detail.object.kind),
            escape(detail.object.name.as_deref().unwrap_or_default()),
            escape(detail.object.message.as_deref().unwrap_or_default()),
            escape(&detail.kubectl)
        );
        for (title, rows) in [("Recent changes", detail.changes.as_deref()), ("Events", Some(&detail.events[..]))] {
            let _ = write!(html, "<h3>{title}</h3>");
            match rows {
                None => html.push_str("<p>Not recorded in this database.</p>"),
                Some([]) => html.push_str("<p>None.</p>"),
                Some(rows) => {
                    html.push_str("<ul>");
                    for row in rows {
                        let _ = write!(html, "<li><code>{}</code></li>", escape(&row.to_string()));
                    }
                    html.push_str("</ul>");
                }
            }
        }
        html.push_str("</aside>");
    }
    html.push_str("</main><script src=\"/vendor/explorer.js\"></script></body></html>");
    html
}

fn who(data: &PageData) -> String {
    let identity = &data.identity;
    if identity.single_user {
        return "<strong>Single-user mode</strong>: loopback only, every row the service's own database role sees"
            .to_owned();
    }
    format!(
        "Signed in as <strong>{}</strong> (database role {}{})",
        escape(identity.user.as_deref().unwrap_or_default()),
        escape(identity.role.as_deref().unwrap_or_default()),
        if identity.groups.is_empty() {
            String::new()
        } else {
            format!("; groups {}", escape(&identity.groups.join(", ")))
        }
    )
}

/// The banner's text, when the copy is incomplete: "72 of 100 clusters loaded (not yet: …);
/// 3 failing: …; RBAC of 2 clusters older than 5 min".
pub fn banner(completeness: &Completeness) -> Option<String> {
    if !completeness.incomplete() {
        return None;
    }
    let names = |names: &[String]| {
        let mut text = names.iter().take(BANNER_NAMES).cloned().collect::<Vec<_>>().join(", ");
        if names.len() > BANNER_NAMES {
            let _ = write!(text, " and {} more", names.len() - BANNER_NAMES);
        }
        text
    };
    let mut parts = vec![format!("{} of {} clusters loaded", completeness.loaded, completeness.clusters)];
    if !completeness.loading.is_empty() {
        parts[0].push_str(&format!(" (not yet: {})", names(&completeness.loading)));
    }
    if completeness.failing_clusters > 0 {
        let mut failing: Vec<String> = completeness.failing.iter().map(|f| f.cluster_name.clone()).collect();
        failing.dedup();
        parts.push(format!("{} failing: {}", completeness.failing_clusters, names(&failing)));
    }
    if !completeness.rbac_stale.is_empty() {
        let (count, minutes) = (completeness.rbac_stale.len(), RBAC_STALE_SECONDS / 60.0);
        let clusters = if count == 1 { "cluster" } else { "clusters" };
        parts.push(format!("RBAC of {count} {clusters} older than {minutes} min: {}", names(&completeness.rbac_stale)));
    }
    Some(parts.join("; "))
}

fn filter_bar(data: &PageData, pairs: &[(String, String)]) -> String {
    let mut html = String::from("<form id=\"filters\" method=\"get\" action=\"/\" role=\"search\">");
    let select = |name: &str, label: &str, options: &[(&str, &str)]| {
        let current = value(pairs, name);
        let mut out = format!("<label>{label} <select name=\"{name}\">");
        for (option, text) in options {
            let selected = if *option == current { " selected" } else { "" };
            let _ = write!(out, "<option value=\"{option}\"{selected}>{text}</option>");
        }
        out.push_str("</select></label>");
        out
    };
    html.push_str(&select("source", "Show", &[("unhealthy", "problems first"), ("all", "all objects")]));
    let mut inputs: Vec<(String, String)> = [
        ("cluster", "Cluster"),
        ("namespace", "Namespace"),
        ("kind", "Kind"),
        ("health", "Health"),
        ("name", "Name starts with"),
        ("selector", "Labels"),
    ]
    .iter()
    .map(|(name, label)| ((*name).to_owned(), (*label).to_owned()))
    .collect();
    inputs.extend(data.fields.iter().map(|field| (format!("field.{field}"), field.clone())));
    for (name, label) in inputs {
        let _ = write!(
            html,
            "<label>{} <input name=\"{}\" value=\"{}\" size=\"12\"></label>",
            escape(&label),
            escape(&name),
            escape(value(pairs, &name))
        );
    }
    html.push_str(&select(
        "sort",
        "Sort",
        &[("cluster", "cluster"), ("namespace", "namespace"), ("kind", "kind"), ("name", "name")],
    ));
    let _ = write!(
        html,
        "<label>Per page <input name=\"limit\" type=\"number\" min=\"1\" max=\"500\" value=\"{}\" size=\"4\"></label>\
         <button type=\"submit\">Filter</button> <a href=\"/\">Clear</a></form>",
        escape(value(pairs, "limit"))
    );
    html
}

fn facet(title: &str, name: &str, counts: &[Count], pairs: &[(String, String)]) -> String {
    let mut html = format!("<details open><summary>{title} ({})</summary><ul class=\"facet\">", counts.len());
    for count in counts {
        let query = if name == "kind" {
            let (group, kind) = count.value.rsplit_once('/').unwrap_or(("core", &count.value));
            params::with(pairs, &[("group", group), ("kind", kind)])
        } else {
            params::with(pairs, &[(name, &count.value)])
        };
        let shown = if count.value.is_empty() { "(cluster-scoped)" } else { &count.value };
        let _ = write!(html, "<li><a href=\"/?{}\">{}</a> {}</li>", escape(&query), escape(shown), count.count);
    }
    html.push_str("</ul></details>");
    html
}

fn table(objects: &[Object], pairs: &[(String, String)]) -> String {
    let mut html = String::from(
        "<table id=\"objects\"><thead><tr><th>cluster</th><th>namespace</th><th>kind</th><th>name</th>\
         <th>health</th><th>message</th><th>since</th></tr></thead><tbody>",
    );
    for object in objects {
        let uid = object.uid.as_deref().unwrap_or_default();
        let mut query = params::with(pairs, &[("object", &format!("{}/{uid}", object.cluster_name))]);
        if let Some(cursor) = pairs.iter().find(|(n, _)| n == "cursor") {
            query.push_str(&format!("&cursor={}", cursor.1));
        }
        let _ = write!(
            html,
            "<tr data-uid=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td><a href=\"/?{}\">{}</a></td>\
             <td class=\"health-{}\">{}</td><td>{}</td><td>{}</td></tr>",
            escape(uid),
            escape(&object.cluster_name),
            escape(&object.namespace),
            escape(&object.kind),
            escape(&query),
            escape(object.name.as_deref().unwrap_or_default()),
            escape(&object.health),
            escape(&object.health),
            escape(object.message.as_deref().unwrap_or_default()),
            object.since.map(|s| s.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default()
        );
    }
    html.push_str("</tbody></table>");
    html
}

fn pager(data: &PageData, pairs: &[(String, String)]) -> String {
    let link = |cursor: &Option<String>, rel: &str, text: &str| match cursor {
        Some(cursor) => {
            format!(
                "<a rel=\"{rel}\" id=\"{rel}\" href=\"/?{}\">{text}</a>",
                escape(&params::with(pairs, &[("cursor", cursor)]))
            )
        }
        None => format!("<span class=\"disabled\">{text}</span>"),
    };
    let label = if data.source == Source::Unhealthy { "objects not Current" } else { "objects" };
    format!(
        "<nav id=\"pager\" aria-label=\"pages\">{} {} <span>{} {label}</span></nav>",
        link(&data.page.prev, "prev", "← Previous"),
        link(&data.page.next, "next", "Next →"),
        data.page.total
    )
}

#[cfg(test)]
mod tests {
    use kubecensus::store::explore::status::Failing;

    use super::*;

    #[test]
    fn the_banner_names_what_is_missing() {
        let mut completeness = Completeness {
            clusters: 100,
            loaded: 100,
            loading: Vec::new(),
            failing_clusters: 0,
            failing: Vec::new(),
            rbac_stale: Vec::new(),
        };
        assert_eq!(banner(&completeness), None);
        completeness.loaded = 98;
        completeness.loading = vec!["a".into(), "b".into()];
        completeness.failing_clusters = 1;
        completeness.failing = vec![Failing {
            cluster_name: "c".into(),
            table_name: "kubernetes_pods".into(),
            error: None,
            started_at: chrono::Utc::now(),
        }];
        completeness.rbac_stale = vec!["d".into(), "e".into()];
        assert_eq!(
            banner(&completeness).unwrap(),
            "98 of 100 clusters loaded (not yet: a, b); 1 failing: c; RBAC of 2 clusters older than 5 min: d, e"
        );
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
