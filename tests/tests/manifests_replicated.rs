//! The replicated overlay (`deploy/overlays/replicated`) as rendered by the real `kubectl
//! kustomize`: NATS a three-node JetStream cluster whose routes reach every pod, behind a
//! disruption budget that keeps the Raft quorum; PostgreSQL a CloudNativePG Cluster of a primary
//! and two hot standbys with `hot_standby_feedback`; writers on the `-rw` Service, readers on
//! `-ro`, and three replicas for the jobs stream, as kubecensus' own flags read them.

use clap::Parser;
use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Service, policy::v1::PodDisruptionBudget};
use kubecensus::ops::{
    args::{CommonArgs, ReadArgs},
    credentials::nats_url::NatsServers,
};
use kubecensus_tests::manifests::{
    Rendered, command_of, config_map, container_env, kustomize, name_of, pod_specs, repo_root, type_of, typed,
};
use serde_json::Value;

/// What the binaries read, as flags (the overlay's ConfigMap sets their environment variables):
/// the common settings and the read URL.
#[derive(Parser)]
struct Settings {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    read: ReadArgs,
}

fn rendered() -> Rendered {
    kustomize(&repo_root().join("deploy/overlays/replicated")).unwrap()
}

/// The host of a PostgreSQL URL (`postgres://user@host:port/db`).
fn host(url: &str) -> &str {
    let authority = url.split("://").nth(1).unwrap().split('/').next().unwrap();
    let host_port = authority.rsplit('@').next().unwrap();
    host_port.split(':').next().unwrap()
}

#[test]
fn nats_is_three_nodes_whose_routes_reach_every_pod_behind_a_quorum_keeping_budget() {
    let rendered = rendered();
    let nats: Vec<StatefulSet> = typed(&rendered, "StatefulSet");
    let nats =
        nats.iter().find(|s| s.metadata.name.as_deref() == Some("kubecensus-nats")).expect("the NATS StatefulSet");
    let spec = nats.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(3));
    let headless = spec.service_name.clone().unwrap();
    let services: Vec<Service> = typed(&rendered, "Service");
    let service = services.iter().find(|s| s.metadata.name.as_deref() == Some(headless.as_str())).unwrap();
    let service_spec = service.spec.as_ref().unwrap();
    assert_eq!(service_spec.cluster_ip.as_deref(), Some("None"), "the routes' Service is headless");
    assert_eq!(service_spec.publish_not_ready_addresses, Some(true), "routes form before the pods are ready");

    let conf = config_map(&rendered, "kubecensus-nats-config").unwrap().data.unwrap()["nats.conf"].clone();
    let pods: Vec<String> = (0..3).map(|i| format!("kubecensus-nats-{i}.{headless}")).collect();
    for pod in &pods {
        assert!(conf.contains(&format!("nats://{pod}:6222")), "a route to {pod}: {conf}");
    }
    assert!(conf.contains("server_name: $SERVER_NAME"), "{conf}");
    let (_, pod) = pod_specs(&rendered).into_iter().find(|(name, _)| name == "kubecensus-nats").unwrap();
    let container = &pod.containers[0];
    let env = container_env(&rendered, container, "kubecensus-nats-0");
    assert_eq!(env.get("SERVER_NAME").map(String::as_str), Some("kubecensus-nats-0"), "each node its own name");
    let mounts = container.volume_mounts.clone().unwrap_or_default();
    let store = conf.lines().find_map(|line| line.trim().strip_prefix("store_dir: ")).expect("a JetStream store");
    let claim = spec.volume_claim_templates.as_ref().and_then(|claims| claims.first()).expect("a volume per node");
    let claim_name = claim.metadata.name.clone().unwrap();
    assert!(
        mounts.iter().any(|m| m.mount_path == store && m.name == claim_name),
        "JetStream's store is on each node's volume: {mounts:?}"
    );

    let budgets: Vec<PodDisruptionBudget> = typed(&rendered, "PodDisruptionBudget");
    let labels = nats.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().labels.clone().unwrap();
    let budget = budgets
        .iter()
        .find(|b| {
            let selector = b.spec.as_ref().and_then(|s| s.selector.as_ref()).and_then(|s| s.match_labels.clone());
            selector.is_some_and(|selector| selector.iter().all(|(k, v)| labels.get(k) == Some(v)))
        })
        .expect("a PodDisruptionBudget for the NATS pods");
    let max_unavailable = budget.spec.as_ref().unwrap().max_unavailable.clone();
    assert_eq!(
        max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1)),
        "two of three (the quorum) stay"
    );
}

#[test]
fn postgres_is_a_primary_and_two_hot_standbys_with_feedback() {
    let rendered = rendered();
    let clusters: Vec<&Value> =
        rendered.objects.iter().filter(|o| type_of(o) == ("postgresql.cnpg.io/v1", "Cluster")).collect();
    assert_eq!(clusters.len(), 1);
    let cluster = clusters[0];
    assert_eq!(name_of(cluster), "kubecensus-postgres");
    assert_eq!(cluster["spec"]["instances"], 3, "one primary and two standbys");
    assert_eq!(cluster["spec"]["postgresql"]["parameters"]["hot_standby_feedback"], "on");
    assert_eq!(cluster["spec"]["bootstrap"]["initdb"]["database"], "kubecensus");
    assert_eq!(cluster["spec"]["bootstrap"]["initdb"]["secret"]["name"], "kubecensus-database");
}

#[test]
fn writers_use_the_primary_readers_the_standbys_and_the_stream_has_three_replicas() {
    let rendered = rendered();
    let pods = pod_specs(&rendered);
    let ours: Vec<_> = pods
        .iter()
        .flat_map(|(name, pod)| pod.containers.iter().map(move |c| (name, c)))
        .filter(|(_, c)| ["scheduler", "worker"].contains(&command_of(c)))
        .collect();
    assert_eq!(ours.len(), 3, "a scheduler, a worker and the explorer");
    for (name, container) in ours {
        let env = container_env(&rendered, container, name);
        let flags = [
            ("DATABASE_URL", "--database-url"),
            ("DATABASE_READ_URL", "--read-database-url"),
            ("NATS_URL", "--nats-url"),
            ("KUBECENSUS_STREAM_REPLICAS", "--stream-replicas"),
        ];
        let mut args = vec!["kubecensus".to_owned()];
        for (variable, flag) in flags {
            let value = env.get(variable).unwrap_or_else(|| panic!("{name}: no {variable}"));
            args.extend([flag.to_owned(), value.clone()]);
        }
        let settings = Settings::try_parse_from(args).unwrap();
        assert_eq!(host(&settings.common.database_url), "kubecensus-postgres-rw", "{name}");
        assert_eq!(host(settings.read.url(&settings.common)), "kubecensus-postgres-ro", "{name}");
        assert_eq!(settings.common.stream_replicas, 3, "{name}");
        let servers = NatsServers::parse(&settings.common.nats_url).unwrap();
        let hosts: Vec<String> = servers.addresses.iter().map(|a| a.host().to_owned()).collect();
        let expected: Vec<String> = (0..3).map(|i| format!("kubecensus-nats-{i}.kubecensus-nats-headless")).collect();
        assert_eq!(hosts, expected, "{name}: every NATS node");
    }
}
