//! A simulated cluster's RBAC as a real API server serves it: the default user-facing
//! ClusterRoles (`view`, `edit`, `admin`, `cluster-admin`) with their aggregation labels and
//! rules, the `system:aggregate-to-*` roles they aggregate, and bindings to users, groups and
//! service accounts; and the runtime changes tests make ([`Fleet::put_rbac`], [`Fleet::remove_rbac`]).
//!
//! The rules follow Kubernetes' bootstrap policy (`plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go`,
//! release 1.33), shortened to the resources the catalog lists and a few subresources. As the
//! API server's aggregation controller does (`pkg/controller/clusterroleaggregation`), an
//! aggregated ClusterRole is served with the rules of every ClusterRole its
//! `aggregationRule` selects ([`aggregate`]), so `view` also carries the rules of any other
//! ClusterRole labelled `rbac.authorization.k8s.io/aggregate-to-view`.

use serde_json::{Value, json};
use uuid::Uuid;

use super::Fleet;

/// The rbac.authorization.k8s.io apiVersion.
const RBAC: &str = "rbac.authorization.k8s.io/v1";
const READ: [&str; 3] = ["get", "list", "watch"];
const WRITE: [&str; 6] = ["create", "delete", "deletecollection", "patch", "update", "get"];

/// The user the generated clusters bind to `edit` in their first application namespace.
pub const DEVELOPER: &str = "developer@example.com";
/// The group the generated clusters bind to `view` cluster-wide.
pub const PLATFORM_GROUP: &str = "platform";
/// The namespace [`DEVELOPER`] may edit in.
pub const DEVELOPER_NAMESPACE: &str = "team-a-payments";

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

/// Metadata with a uid derived from the cluster and the object, so adding these objects draws
/// nothing from the content's random numbers (every other object stays as it was).
fn meta(cluster: &str, kind: &str, name: &str, namespace: Option<&str>, labels: Value, created: &str) -> Value {
    let key = format!("{cluster}/{kind}/{}/{name}", namespace.unwrap_or_default());
    let mut metadata = json!({"name": name, "uid": Uuid::new_v5(&Uuid::NAMESPACE_OID, key.as_bytes()).to_string(),
                              "creationTimestamp": created, "labels": labels});
    if let Some(namespace) = namespace {
        metadata["namespace"] = json!(namespace);
    }
    metadata
}

fn aggregate_label(to: &str) -> Value {
    json!({"kubernetes.io/bootstrapping": "rbac-defaults", format!("rbac.authorization.k8s.io/aggregate-to-{to}"): "true"})
}

/// A ClusterRole object.
pub fn cluster_role(cluster: &str, name: &str, labels: Value, rules: Vec<Value>, created: &str) -> Value {
    json!({"apiVersion": RBAC, "kind": "ClusterRole", "metadata": meta(cluster, "ClusterRole", name, None, labels, created), "rules": rules})
}

/// A RoleBinding (with `namespace`) or ClusterRoleBinding of the ClusterRole `role` to `subjects`.
pub fn binding(
    cluster: &str,
    name: &str,
    namespace: Option<&str>,
    role: &str,
    subjects: Value,
    created: &str,
) -> Value {
    let kind = if namespace.is_some() { "RoleBinding" } else { "ClusterRoleBinding" };
    json!({"apiVersion": RBAC, "kind": kind, "metadata": meta(cluster, kind, name, namespace, Value::Null, created),
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
           "subjects": subjects})
}

/// A subject list of one User, Group (`kind`) or ServiceAccount (`namespace:name`).
pub fn subject(kind: &str, name: &str) -> Value {
    match (kind, name.split_once(':')) {
        ("ServiceAccount", Some((namespace, name))) => json!([{"kind": kind, "name": name, "namespace": namespace}]),
        _ => json!([{"kind": kind, "apiGroup": "rbac.authorization.k8s.io", "name": name}]),
    }
}

/// The default ClusterRoles, unaggregated (`aggregationRule` set, the rules their own
/// `system:aggregate-to-*` roles hold), and the bindings of a generated cluster.
pub fn defaults(cluster: &str, created: &str) -> Vec<Value> {
    let view_rules = vec![
        rule(
            &[""],
            &[
                "pods",
                "pods/log",
                "pods/status",
                "services",
                "endpoints",
                "configmaps",
                "persistentvolumeclaims",
                "serviceaccounts",
                "replicationcontrollers",
                "limitranges",
                "resourcequotas",
                "events",
                "podtemplates",
            ],
            &READ,
        ),
        rule(&[""], &["namespaces"], &READ),
        rule(
            &["apps"],
            &["deployments", "deployments/scale", "replicasets", "statefulsets", "daemonsets", "controllerrevisions"],
            &READ,
        ),
        rule(&["autoscaling"], &["horizontalpodautoscalers"], &READ),
        rule(&["batch"], &["jobs", "cronjobs"], &READ),
        rule(&["policy"], &["poddisruptionbudgets"], &READ),
        rule(&["networking.k8s.io"], &["ingresses", "networkpolicies"], &READ),
        rule(&["discovery.k8s.io"], &["endpointslices"], &READ),
    ];
    let edit_rules = vec![
        rule(
            &[""],
            &["pods", "pods/exec", "pods/portforward", "services", "configmaps", "persistentvolumeclaims", "secrets"],
            &WRITE,
        ),
        rule(&[""], &["secrets"], &READ),
        rule(&[""], &["serviceaccounts"], &["impersonate"]),
        rule(&["apps"], &["deployments", "deployments/scale", "replicasets", "statefulsets", "daemonsets"], &WRITE),
        rule(&["batch"], &["jobs", "cronjobs"], &WRITE),
    ];
    let admin_rules = vec![
        rule(&["rbac.authorization.k8s.io"], &["roles", "rolebindings"], &WRITE),
        rule(&["rbac.authorization.k8s.io"], &["roles", "rolebindings"], &READ),
        rule(&["authorization.k8s.io"], &["localsubjectaccessreviews"], &["create"]),
    ];
    let aggregated = |name: &str, label: Value, to: &str| {
        let mut role = cluster_role(cluster, name, label, vec![], created);
        role["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": {format!("rbac.authorization.k8s.io/aggregate-to-{to}"): "true"}}]});
        role
    };
    let defaults = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    vec![
        cluster_role(cluster, "system:aggregate-to-view", aggregate_label("view"), view_rules, created),
        cluster_role(cluster, "system:aggregate-to-edit", aggregate_label("edit"), edit_rules, created),
        cluster_role(cluster, "system:aggregate-to-admin", aggregate_label("admin"), admin_rules, created),
        aggregated("view", aggregate_label("edit"), "view"),
        aggregated("edit", aggregate_label("admin"), "edit"),
        aggregated("admin", defaults.clone(), "admin"),
        cluster_role(
            cluster,
            "cluster-admin",
            defaults,
            vec![rule(&["*"], &["*"], &["*"]), json!({"nonResourceURLs": ["*"], "verbs": ["*"]})],
            created,
        ),
        binding(cluster, "cluster-admin", None, "cluster-admin", subject("Group", "system:masters"), created),
        binding(cluster, "platform-view", None, "view", subject("Group", PLATFORM_GROUP), created),
        binding(cluster, "developers", Some(DEVELOPER_NAMESPACE), "edit", subject("User", DEVELOPER), created),
    ]
}

/// Fills the rules of every ClusterRole with an `aggregationRule` with those of the ClusterRoles
/// its selectors match (by `matchLabels`), until nothing changes (`admin` selects `edit`, which
/// selects `view`), as the aggregation controller serves them.
pub fn aggregate(objects: &mut [Value]) {
    loop {
        let roles: Vec<Value> =
            objects.iter().filter(|o| o["kind"] == "ClusterRole" && o["apiVersion"] == RBAC).cloned().collect();
        let mut changed = false;
        for object in objects.iter_mut().filter(|o| o["kind"] == "ClusterRole" && o["aggregationRule"].is_object()) {
            let selectors = object["aggregationRule"]["clusterRoleSelectors"].as_array().cloned().unwrap_or_default();
            let mut rules: Vec<Value> = Vec::new();
            for role in roles.iter().filter(|r| r["metadata"]["name"] != object["metadata"]["name"]) {
                let selected = selectors.iter().any(|selector| {
                    selector["matchLabels"].as_object().is_some_and(|labels| {
                        labels.iter().all(|(key, value)| &role["metadata"]["labels"][key] == value)
                    })
                });
                for rule in role["rules"].as_array().into_iter().flatten() {
                    if selected && !rules.contains(rule) {
                        rules.push(rule.clone());
                    }
                }
            }
            if object["rules"] != json!(rules) {
                object["rules"] = json!(rules);
                changed = true;
            }
        }
        if !changed {
            return;
        }
    }
}

/// The plural of an RBAC kind.
fn plural(kind: &str) -> anyhow::Result<&'static str> {
    Ok(match kind {
        "Role" => "roles",
        "ClusterRole" => "clusterroles",
        "RoleBinding" => "rolebindings",
        "ClusterRoleBinding" => "clusterrolebindings",
        other => anyhow::bail!("`{other}` is not an RBAC kind (Role, ClusterRole, RoleBinding, ClusterRoleBinding)"),
    })
}

impl Fleet {
    /// Adds (or replaces) a Role, ClusterRole, RoleBinding or ClusterRoleBinding in a cluster, as
    /// `kubectl apply` would: the cluster's next list of that resource has it. Panics on an
    /// unknown cluster.
    ///
    /// # Errors
    /// An object of another kind.
    pub fn put_rbac(&self, cluster: &str, object: Value) -> anyhow::Result<()> {
        let plural = plural(object["kind"].as_str().unwrap_or_default())?;
        self.cluster(cluster).server.store.lock().expect("store lock").put(plural, object);
        Ok(())
    }

    /// Deletes an RBAC object (`kind` as [`Self::put_rbac`] takes, `namespace` empty for a
    /// cluster-scoped one) from a cluster; whether it was there. Panics on an unknown cluster.
    ///
    /// # Errors
    /// An unknown kind.
    pub fn remove_rbac(&self, cluster: &str, kind: &str, namespace: &str, name: &str) -> anyhow::Result<bool> {
        let plural = plural(kind)?;
        Ok(self.cluster(cluster).server.store.lock().expect("store lock").remove(plural, namespace, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_roles_carry_the_rules_they_select_transitively() {
        let mut objects = defaults("c", "2024-01-01T00:00:00Z");
        let extra = cluster_role(
            "c",
            "view-widgets",
            json!({"rbac.authorization.k8s.io/aggregate-to-view": "true"}),
            vec![rule(&["example.com"], &["widgets"], &READ)],
            "2024-01-01T00:00:00Z",
        );
        objects.push(extra);
        aggregate(&mut objects);
        let rules = |name: &str| {
            objects.iter().find(|o| o["metadata"]["name"] == name).unwrap()["rules"].as_array().unwrap().clone()
        };
        let widgets = rule(&["example.com"], &["widgets"], &READ);
        assert!(rules("view").contains(&widgets));
        assert!(rules("edit").contains(&widgets), "edit selects view's label");
        assert!(rules("admin").contains(&widgets));
        assert!(!rules("view").iter().any(|r| r["resources"].as_array().unwrap().contains(&json!("secrets"))));
        assert!(rules("edit").iter().any(|r| r["resources"].as_array().unwrap().contains(&json!("secrets"))));
    }
}
