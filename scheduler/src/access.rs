//! `scheduler access grant|revoke|list|explain`: identities of viewers, and why a role sees what
//! it sees (`kubecensus::store::access`).

use kubecensus::store::access::identities::{self, Identity};
use sqlx::PgPool;

use crate::{
    args::{AccessCommand, Output},
    report::table,
};

/// Runs one `access` command and prints its outcome as `output` says.
pub async fn run(pool: &PgPool, command: &AccessCommand, output: Output) -> anyhow::Result<()> {
    match command {
        AccessCommand::Grant { role, user, groups, cluster } => {
            let identity = Identity {
                role_name: role.clone(),
                cluster_name: cluster.clone(),
                k8s_user: user.clone(),
                k8s_groups: groups.clone(),
            };
            let visible = identities::grant(pool, &identity).await?;
            match output {
                Output::Json => println!("{}", serde_json::json!({"granted": identity, "visible_rows": visible})),
                Output::Table => println!(
                    "{role} is {user}{} in {}: {visible} (cluster, group, kind, namespace) visible",
                    groups_text(groups),
                    cluster.as_deref().map_or("every cluster".to_owned(), |c| format!("cluster {c}"))
                ),
            }
        }
        AccessCommand::Revoke { role, cluster } => {
            let removed = identities::revoke(pool, role, cluster.as_deref()).await?;
            let scope = cluster.as_deref().map_or("fleet-wide".to_owned(), |c| format!("in cluster {c}"));
            match output {
                Output::Json => {
                    println!("{}", serde_json::json!({"role": role, "cluster": cluster, "revoked": removed}))
                }
                Output::Table if removed => println!("revoked {role}'s identity {scope}"),
                Output::Table => println!("{role} had no identity {scope}"),
            }
        }
        AccessCommand::List => {
            let listed = identities::list(pool).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&listed)?),
                Output::Table => {
                    let mut out = table(&["role", "cluster", "user", "groups"]);
                    let count = listed.len();
                    for i in listed {
                        let cluster = i.cluster_name.unwrap_or_else(|| "(every cluster)".to_owned());
                        out.add_row(vec![i.role_name, cluster, i.k8s_user, i.k8s_groups.join(",")]);
                    }
                    println!("{out}");
                    println!("{count} identities (scheduler access grant adds one)");
                }
            }
        }
        AccessCommand::Explain { role, cluster, namespace, resource, group } => {
            let found = identities::explain(pool, role, cluster, namespace.as_deref(), group, resource).await?;
            if output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&found)?);
                return Ok(());
            }
            let what = format!(
                "list {}{resource} {}",
                if group.is_empty() { String::new() } else { format!("{group}/") },
                namespace.as_deref().map_or("cluster-wide".to_owned(), |n| format!("in namespace {n}"))
            );
            let Some(user) = found.k8s_user else {
                println!("{role} has no identity that applies in cluster {cluster}: it sees nothing there");
                return Ok(());
            };
            if found.grants.is_empty() {
                println!("no binding lets {user}{} {what} in cluster {cluster}", groups_text(&found.k8s_groups));
                return Ok(());
            }
            println!("{user} may {what} in cluster {cluster}, granted by:");
            let mut out = table(&["binding", "role", "subject", "rule"]);
            for g in found.grants {
                let binding = match g.binding_namespace {
                    Some(namespace) => format!("{} {namespace}/{}", g.binding_kind, g.binding_name),
                    None => format!("{} {}", g.binding_kind, g.binding_name),
                };
                let rule_group = if g.api_group.is_empty() { "\"\"".to_owned() } else { g.api_group };
                out.add_row(vec![
                    binding,
                    format!("{} {}", g.role_kind, g.role_name),
                    format!("{} {}", g.subject_kind, g.subject_name),
                    format!("{rule_group} {}", g.resource),
                ]);
            }
            println!("{out}");
        }
    }
    Ok(())
}

/// ` (groups a, b)`, or nothing without groups.
fn groups_text(groups: &[String]) -> String {
    if groups.is_empty() { String::new() } else { format!(" (groups {})", groups.join(", ")) }
}
