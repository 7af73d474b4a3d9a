//! Clusters from Cluster API kubeconfig Secrets: for each workload cluster, Cluster API writes a
//! Secret `<cluster>-kubeconfig` in the cluster's namespace, labelled
//! `cluster.x-k8s.io/cluster-name: <cluster>`, whose data key `value` is a kubeconfig (its
//! current context reaches the cluster, usually with a client certificate)
//! (<https://cluster-api.sigs.k8s.io/developer/providers/contracts/control-plane#cluster-kubeconfig-management>).
//! The other Secrets with that label (`-ca`, `-etcd`, `-sa`, `-proxy`) are not kubeconfigs and
//! are passed over.
//!
//! Cluster API's AWS provider (CAPA) writes a second kubeconfig for an EKS cluster,
//! `<cluster>-user-kubeconfig` (labelled `<cluster>-user`), for people: its user runs `aws eks
//! get-token` (or `aws-iam-authenticator`) with the caller's own AWS identity. The
//! `<cluster>-kubeconfig` one is the controller's: a token CAPA presigns and rewrites before it
//! expires (`reconcileKubeconfig` and `createUserKubeconfigSecret` in CAPA's
//! `pkg/cloud/services/eks/config.go`). kubecensus uses the controller's, which needs no AWS
//! credentials and no `aws` CLI in its pods, and passes over a `-user-kubeconfig` Secret beside
//! it; one alone (no `<cluster>-kubeconfig` in its namespace) is a cluster of its own.

use k8s_openapi::api::core::v1::Secret;
use kube::config::Kubeconfig;
use secrecy::SecretString;

use super::{ClusterConfig, SecretCredentials, secret};

/// The label Cluster API puts on every Secret of a workload cluster.
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
/// The suffix of a kubeconfig Secret's name.
const NAME_SUFFIX: &str = "-kubeconfig";
/// The suffix of the name of CAPA's kubeconfig for people, beside `<cluster>-kubeconfig`.
const USER_NAME_SUFFIX: &str = "-user-kubeconfig";

/// The clusters' kubeconfig Secrets among one namespace's Secrets with the cluster-name label:
/// not a cluster's CA, etcd or service-account keys, nor CAPA's `<cluster>-user-kubeconfig`
/// beside its `<cluster>-kubeconfig`.
pub fn kubeconfig_secrets(secrets: &[Secret]) -> Vec<&Secret> {
    let names: std::collections::HashSet<&str> =
        secrets.iter().filter_map(|secret| secret.metadata.name.as_deref()).collect();
    let is_kubeconfig = |name: &str| {
        let beside_the_controllers = name
            .strip_suffix(USER_NAME_SUFFIX)
            .is_some_and(|cluster| names.contains(format!("{cluster}{NAME_SUFFIX}").as_str()));
        name.ends_with(NAME_SUFFIX) && !beside_the_controllers
    };
    secrets.iter().filter(|secret| secret.metadata.name.as_deref().is_some_and(is_kubeconfig)).collect()
}

/// The cluster a kubeconfig Secret reaches, named after its `cluster.x-k8s.io/cluster-name`
/// label (else the Secret's name without `-kubeconfig`). The error never quotes the kubeconfig.
pub fn cluster(secret: &Secret) -> Result<ClusterConfig, String> {
    let labelled = secret.metadata.labels.as_ref().and_then(|labels| labels.get(CLUSTER_NAME_LABEL)).cloned();
    let name = labelled
        .or_else(|| secret.metadata.name.as_deref().and_then(|n| n.strip_suffix(NAME_SUFFIX)).map(str::to_owned))
        .ok_or("it has no cluster name")?;
    let text = secret::data(secret, "value")?.ok_or("it has no `value` key")?;
    let kubeconfig = Kubeconfig::from_yaml(&text).map_err(|_| "its `value` is not a kubeconfig".to_owned())?;
    let current = kubeconfig.current_context.as_deref().ok_or("its kubeconfig has no current-context")?;
    if !kubeconfig.contexts.iter().any(|context| context.name == current) {
        return Err(format!("its kubeconfig's current-context `{current}` is not one of its contexts"));
    }
    Ok(ClusterConfig {
        name: secret::cluster_name(&name),
        fields: secret::fields(secret),
        secret: SecretCredentials { kubeconfig: Some(SecretString::from(text)), ..SecretCredentials::default() },
        ..ClusterConfig::default()
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::model::catalog::Catalog;

    use super::*;

    fn secret(name: &str, value: &str) -> Secret {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"cluster.x-k8s.io/cluster-name": "work-1"}},
            "type": "cluster.x-k8s.io/secret",
            "data": {"value": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, value)},
        }))
        .unwrap()
    }

    const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\ncurrent-context: work-1-admin@work-1\n\
        clusters: [{name: work-1, cluster: {server: 'https://10.0.0.9:6443'}}]\n\
        users: [{name: work-1-admin, user: {token: kc-token-1}}]\n\
        contexts: [{name: work-1-admin@work-1, context: {cluster: work-1, user: work-1-admin}}]\n";

    /// The names of [`kubeconfig_secrets`] among Secrets of these names.
    fn kubeconfigs(names: &[&str]) -> Vec<String> {
        let secrets: Vec<Secret> = names.iter().map(|name| secret(name, KUBECONFIG)).collect();
        kubeconfig_secrets(&secrets).iter().map(|s| s.metadata.name.clone().unwrap()).collect()
    }

    #[test]
    fn capas_user_kubeconfig_beside_the_controllers_is_passed_over() {
        assert_eq!(kubeconfigs(&["work-1-ca", "work-1-kubeconfig", "work-1-etcd"]), ["work-1-kubeconfig"]);
        assert_eq!(kubeconfigs(&["eks-1-kubeconfig", "eks-1-user-kubeconfig"]), ["eks-1-kubeconfig"]);
        // A cluster named `...-user` alone is a cluster.
        assert_eq!(kubeconfigs(&["team-user-kubeconfig", "team-user-ca"]), ["team-user-kubeconfig"]);
    }

    #[test]
    fn a_kubeconfig_secret_is_a_cluster_named_after_its_label() {
        let cluster = cluster(&secret("work-1-kubeconfig", KUBECONFIG)).unwrap();
        assert_eq!(cluster.name, "work-1");
        cluster.check(&Catalog::builtin()).unwrap();
        assert!(!format!("{cluster:?}").contains("kc-token-1"));
    }

    #[test]
    fn a_broken_kubeconfig_is_reported_without_its_text() {
        let err = cluster(&secret("work-1-kubeconfig", "users: [kc-token-2")).unwrap_err();
        assert!(err.contains("not a kubeconfig") && !err.contains("kc-token-2"), "{err}");
        let err =
            cluster(&secret("work-1-kubeconfig", &KUBECONFIG.replace("current-context: work-1-admin@work-1\n", "")))
                .unwrap_err();
        assert!(err.contains("no current-context"), "{err}");
    }
}
