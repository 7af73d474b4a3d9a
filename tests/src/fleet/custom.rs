//! Custom resources in the simulated fleet: the CRDs and objects of Flux, Argo CD and
//! cert-manager, shaped after real objects (templates are the fixtures in tests/fixtures, their
//! sources in tests/fixtures/SOURCES.md), in a mix of states: healthy, failing (Ready False and
//! Stalled), progressing (Reconciling), suspended (Flux's `spec.suspend`) and terminating.
//!
//! Every third cluster (the third, sixth, ...) runs none of them: it serves no such CRD, so
//! discovery does not list them and their lists answer 404, as on a cluster without Flux. A
//! fleet of the RFC's shape ([`super::NamespaceObjects::Flux`]) runs Flux everywhere, with one
//! Kustomization and one HelmRelease per namespace ([`flux_per_namespace`]).

use chrono::Duration;
use kubecensus::model::catalog::ApiRef;
use serde_json::{Value, json};

use super::content::{Rng, epoch, timestamp};

/// A custom kind the simulated clusters serve: its API, and the fixture its objects copy.
struct Kind {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    template: &'static str,
}

/// Flux's kinds (the versions Flux 2.x serves), Argo CD's Application, cert-manager's
/// Certificate.
const KINDS: &[Kind] = &[
    Kind {
        group: "kustomize.toolkit.fluxcd.io",
        version: "v1",
        kind: "Kustomization",
        plural: "kustomizations",
        template: include_str!("../../fixtures/real/flux.kustomize.toolkit.fluxcd.io.v1.Kustomization-observed.json"),
    },
    Kind {
        group: "helm.toolkit.fluxcd.io",
        version: "v2",
        kind: "HelmRelease",
        plural: "helmreleases",
        template: include_str!("../../fixtures/real/flux.helm.toolkit.fluxcd.io.v2beta1.HelmRelease-observed.json"),
    },
    Kind {
        group: "source.toolkit.fluxcd.io",
        version: "v1",
        kind: "GitRepository",
        plural: "gitrepositories",
        template: include_str!("../../fixtures/real/flux.source.toolkit.fluxcd.io.v1.GitRepository-observed.json"),
    },
    Kind {
        group: "source.toolkit.fluxcd.io",
        version: "v1",
        kind: "HelmRepository",
        plural: "helmrepositories",
        template: include_str!(
            "../../fixtures/real/flux.source.toolkit.fluxcd.io.v1beta2.HelmRepository-observed.json"
        ),
    },
    Kind {
        group: "source.toolkit.fluxcd.io",
        version: "v1",
        kind: "HelmChart",
        plural: "helmcharts",
        template: include_str!("../../fixtures/real/flux.source.toolkit.fluxcd.io.v1beta2.HelmChart-observed.json"),
    },
    Kind {
        group: "source.toolkit.fluxcd.io",
        version: "v1",
        kind: "OCIRepository",
        plural: "ocirepositories",
        template: include_str!("../../fixtures/real/flux.source.toolkit.fluxcd.io.v1beta2.OCIRepository-observed.json"),
    },
    Kind {
        group: "source.toolkit.fluxcd.io",
        version: "v1",
        kind: "Bucket",
        plural: "buckets",
        template: include_str!("../../fixtures/real/flux.source.toolkit.fluxcd.io.v1beta2.Bucket-observed.json"),
    },
    Kind {
        group: "argoproj.io",
        version: "v1alpha1",
        kind: "Application",
        plural: "applications",
        template: include_str!("../../fixtures/docs/argocd.argoproj.io.v1alpha1.Application-guestbook.json"),
    },
    Kind {
        group: "cert-manager.io",
        version: "v1",
        kind: "Certificate",
        plural: "certificates",
        template: include_str!("../../fixtures/docs/cert-manager.io.v1.Certificate-example-com.json"),
    },
];

/// Kinds outside kubecensus' catalog, served beside those: the Prometheus Operator's
/// ServiceMonitor. Only `{group: '*', kind: '*'}` collects their objects.
const OTHER_KINDS: &[Kind] = &[Kind {
    group: "monitoring.coreos.com",
    version: "v1",
    kind: "ServiceMonitor",
    plural: "servicemonitors",
    template: include_str!("../../fixtures/docs/monitoring.coreos.com.v1.ServiceMonitor-example-app.json"),
}];

/// One object of an [`OTHER_KINDS`] kind for every this many custom resources.
const OTHER_KIND_EVERY: usize = 20;

/// Whether the cluster at `index` runs Flux, Argo CD and cert-manager.
pub fn runs_custom_resources(index: usize) -> bool {
    index % 3 != 2
}

/// The APIs of every custom kind, the catalog's and the others.
pub fn apis() -> Vec<ApiRef> {
    KINDS
        .iter()
        .chain(OTHER_KINDS)
        .map(|k| ApiRef {
            group: k.group.into(),
            version: k.version.into(),
            kind: k.kind.into(),
            plural: k.plural.into(),
            namespaced: true,
        })
        .collect()
}

/// The CRD of every custom kind, as the API server serves an established one.
pub fn definitions(rng: &mut Rng) -> Vec<Value> {
    let created = timestamp(epoch());
    KINDS
        .iter()
        .chain(OTHER_KINDS)
        .map(|k| {
            let names = json!({"kind": k.kind, "listKind": format!("{}List", k.kind), "plural": k.plural,
                               "singular": k.kind.to_lowercase()});
            let condition = |type_: &str, reason: &str, message: &str| {
                json!({"type": type_, "status": "True", "reason": reason, "message": message,
                       "lastTransitionTime": created})
            };
            json!({
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": format!("{}.{}", k.plural, k.group), "uid": rng.uuid(), "generation": 1,
                             "creationTimestamp": created},
                "spec": {"group": k.group, "names": names, "scope": "Namespaced",
                         "versions": [{"name": k.version, "served": true, "storage": true}]},
                "status": {"acceptedNames": names, "storedVersions": [k.version], "conditions": [
                    condition("NamesAccepted", "NoConflicts", "no conflicts found"),
                    condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
                ]},
            })
        })
        .collect()
}

/// Object `i` of `kind`: its fixture with the kind's API version and new metadata, in
/// `namespace`.
fn instance(kind: &Kind, i: usize, namespace: &str, rng: &mut Rng) -> Value {
    let mut object: Value = serde_json::from_str(kind.template).expect("custom resource templates are JSON");
    object["apiVersion"] = json!(format!("{}/{}", kind.group, kind.version));
    object["metadata"] = json!({
        "name": format!("{}-{i}", kind.plural.trim_end_matches('s')),
        "namespace": namespace,
        "uid": rng.uuid(),
        "generation": 1,
        "creationTimestamp": timestamp(epoch() + Duration::minutes(i as i64)),
        "labels": {"app.kubernetes.io/part-of": "fleet"},
    });
    object
}

/// `count` custom resources spread over the catalog's kinds and `namespaces`: of every ten, six
/// healthy, one failing, one progressing, one suspended (Flux) or failing, one terminating (Argo
/// CD's Applications keep their own `status.health` instead of conditions). Then one object of
/// a kind outside the catalog ([`OTHER_KINDS`]) for every [`OTHER_KIND_EVERY`] of them.
pub fn objects(count: usize, namespaces: &[String], rng: &mut Rng) -> Vec<Value> {
    let mut objects = catalog_kind_objects(count, namespaces, rng);
    for i in 0..count / OTHER_KIND_EVERY {
        let namespace = rng.pick(namespaces).clone();
        objects.push(instance(&OTHER_KINDS[i % OTHER_KINDS.len()], i, &namespace, rng));
    }
    objects
}

/// The catalog kinds' objects of [`objects`].
fn catalog_kind_objects(count: usize, namespaces: &[String], rng: &mut Rng) -> Vec<Value> {
    (0..count)
        .map(|i| {
            let namespace = rng.pick(namespaces).clone();
            in_state(&KINDS[i % KINDS.len()], i, &namespace, rng)
        })
        .collect()
}

/// One Flux Kustomization and one HelmRelease in each of `namespaces` (the RFC's fleet shape),
/// in the mix of states of [`objects`] (by their order: namespace by namespace).
pub fn flux_per_namespace(namespaces: &[String], rng: &mut Rng) -> Vec<Value> {
    let kinds: Vec<&Kind> = ["Kustomization", "HelmRelease"]
        .iter()
        .map(|name| KINDS.iter().find(|k| k.kind == *name).expect("Flux's kinds are in KINDS"))
        .collect();
    let mut objects = Vec::with_capacity(namespaces.len() * kinds.len());
    for namespace in namespaces {
        for kind in &kinds {
            objects.push(in_state(kind, objects.len(), namespace, rng));
        }
    }
    objects
}

/// Object `i` of `kind` in `namespace`, in the state `i % 10` gives it ([`objects`]).
fn in_state(kind: &Kind, i: usize, namespace: &str, rng: &mut Rng) -> Value {
    let mut object = instance(kind, i, namespace, rng);
    let at = timestamp(epoch() + Duration::minutes(i as i64) + Duration::hours(1));
    object["status"]["observedGeneration"] = json!(1);
    let flux = kind.group.ends_with(".toolkit.fluxcd.io");
    if flux {
        object["spec"]["suspend"] = json!(false);
    }
    if i % 10 == 9 {
        object["metadata"]["deletionTimestamp"] = json!(at);
        object["metadata"]["finalizers"] = json!(["finalizers.fluxcd.io"]);
    }
    if kind.group == "argoproj.io" {
        // Argo CD reports health in `status.health`, not in conditions kstatus reads.
        let health = match i % 10 {
            6 | 8 => "Degraded",
            7 => "Progressing",
            _ => "Healthy",
        };
        object["status"]["health"]["status"] = json!(health);
        return object;
    }
    let condition = |type_: &str, status: &str, reason: &str, message: &str| json!({"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": at});
    let conditions = match i % 10 {
        6 => vec![
            condition("Ready", "False", "ReconciliationFailed", "simulated: the artifact could not be fetched"),
            condition("Stalled", "True", "ReconciliationFailed", "simulated: retries exhausted"),
        ],
        7 => vec![
            condition("Reconciling", "True", "Progressing", "simulated: reconciliation in progress"),
            condition("Ready", "Unknown", "Progressing", "simulated: reconciliation in progress"),
        ],
        8 if flux => {
            object["spec"]["suspend"] = json!(true);
            vec![condition("Ready", "True", "ReconciliationSucceeded", "simulated: applied")]
        }
        8 => vec![condition("Ready", "False", "Failed", "simulated: not ready")],
        _ => vec![condition("Ready", "True", "ReconciliationSucceeded", "simulated: applied")],
    };
    object["status"]["conditions"] = json!(conditions);
    object
}
