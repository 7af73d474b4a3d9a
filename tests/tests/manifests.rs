//! The Kubernetes manifests say what kubecensus needs: every kustomization renders with the real
//! `kubectl kustomize`, every object is its Kubernetes type, the custom resources (KEDA, Prometheus
//! Operator) name what the code really uses, the pods are hardened and outlive the worker's
//! shutdown grace, and the image the Dockerfile builds holds what the containers run.

use std::{collections::BTreeMap, path::Path, process::Command, time::Duration};

use clap::{CommandFactory, Parser};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Container, PodSpec, Service},
    policy::v1::PodDisruptionBudget,
};
use kubecensus::{ops::args::CommonArgs, queue::CONSUMER};
use kubecensus_tests::{
    fleet::{Faults, Fleet, FleetSpec},
    harness::{TestEnv, binary},
    manifests::{
        CUSTOM_KINDS, LocalPod, Rendered, Running, base_dir, command_of, container_env, flag_value, kustomize, name_of,
        pod_specs, readiness, render_all, repo_root, resolve_port, start_container, type_of, typed,
    },
    probes::{self, Answer},
    servers::{TempNats, TempPostgres},
};
use serde_json::Value;

/// The settings both binaries take, to read their defaults from the code.
#[derive(Parser)]
struct Common {
    #[command(flatten)]
    common: CommonArgs,
}

/// The default of one of [`CommonArgs`]' settings, as clap has it.
fn default_of(id: &str) -> String {
    let command = Common::command();
    let arg = command.get_arguments().find(|a| a.get_id() == id).unwrap_or_else(|| panic!("no setting {id}"));
    arg.get_default_values()[0].to_string_lossy().into_owned()
}

/// Every kustomization, rendered in a scratch folder of this test.
fn rendered() -> Vec<Rendered> {
    let scratch = std::env::temp_dir().join(format!("kubecensus-manifests-{}", uuid::Uuid::new_v4().simple()));
    let rendered = render_all(&scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    rendered.unwrap()
}

/// What the Dockerfile puts in the image: the binaries it copies into /usr/local/bin and the
/// user it runs as.
struct Image {
    binaries: Vec<String>,
    uid: i64,
}

fn image() -> Image {
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let copy = dockerfile.lines().find(|l| l.starts_with("COPY --from=build")).expect("a COPY of the binaries");
    let words: Vec<&str> = copy.split_whitespace().collect();
    assert_eq!(words.last(), Some(&"/usr/local/bin/"), "{copy}");
    let binaries = words[2..words.len() - 1].iter().map(|w| w.rsplit('/').next().unwrap().to_owned()).collect();
    let user = dockerfile.lines().filter_map(|l| l.strip_prefix("USER ")).next_back().expect("a USER line");
    let uid = user.split(':').next().unwrap().trim().parse().expect("a numeric USER");
    Image { binaries, uid }
}

/// The containers of `rendered` that run a kubecensus binary, with their pod's spec.
fn kubecensus_containers<'a>(pods: &'a [(String, PodSpec)], image: &Image) -> Vec<(&'a PodSpec, &'a Container)> {
    pods.iter()
        .flat_map(|(_, pod)| pod.containers.iter().map(move |c| (pod, c)))
        .filter(|(_, c)| c.command.as_ref().and_then(|cmd| cmd.first()).is_some_and(|b| image.binaries.contains(b)))
        .collect()
}

#[test]
fn every_kustomization_renders_objects_of_their_kubernetes_types() {
    let all = rendered();
    let names: Vec<&str> = all.iter().map(|r| r.name.as_str()).collect();
    assert!(names.len() >= 5, "the base, three components and an overlay: {names:?}");
    for rendered in &all {
        for object in &rendered.objects {
            if !CUSTOM_KINDS.contains(&type_of(object)) {
                kubecensus_tests::manifests::check_typed(object)
                    .unwrap_or_else(|err| panic!("{}: {err:#}", rendered.name));
            }
        }
    }
    // The base names no namespace: `kubectl apply -k ... -n <namespace>` or an overlay picks it.
    let base = &all[0];
    for object in &base.objects {
        assert!(object["metadata"]["namespace"].is_null(), "{} has a namespace in the base", name_of(object));
    }
    for kind in CUSTOM_KINDS {
        assert!(all.iter().any(|r| r.objects.iter().any(|o| type_of(o) == kind)), "no {kind:?} rendered");
    }
}

#[test]
fn pods_are_hardened_and_run_what_the_image_holds() {
    let image = image();
    assert_eq!(image.binaries, ["scheduler", "worker"]);
    for rendered in rendered() {
        let pods = pod_specs(&rendered);
        for (name, pod) in &pods {
            let context = pod.security_context.clone().unwrap_or_default();
            assert_eq!(context.run_as_non_root, Some(true), "{}: {name}", rendered.name);
            let seccomp = context.seccomp_profile.map(|s| s.type_);
            assert_eq!(seccomp.as_deref(), Some("RuntimeDefault"), "{}: {name}", rendered.name);
            assert_eq!(pod.automount_service_account_token, Some(false), "{}: {name}", rendered.name);
            for container in &pod.containers {
                let what = format!("{}: {name}/{}", rendered.name, container.name);
                let sc = container.security_context.clone().unwrap_or_default();
                assert_eq!(sc.run_as_non_root, Some(true), "{what}");
                assert_eq!(sc.allow_privilege_escalation, Some(false), "{what}");
                assert_eq!(sc.read_only_root_filesystem, Some(true), "{what}");
                assert_eq!(sc.capabilities.and_then(|c| c.drop), Some(vec!["ALL".to_owned()]), "{what}");
                assert_eq!(sc.seccomp_profile.map(|s| s.type_).as_deref(), Some("RuntimeDefault"), "{what}");
                let resources = container.resources.clone().unwrap_or_default();
                let requests = resources.requests.unwrap_or_default();
                assert!(requests.contains_key("cpu") && requests.contains_key("memory"), "{what}: requests");
                assert!(resources.limits.unwrap_or_default().contains_key("memory"), "{what}: memory limit");
            }
        }
        let ours = kubecensus_containers(&pods, &image);
        assert_eq!(ours.len(), 3, "{}: a scheduler, a worker and the explorer", rendered.name);
        for (pod, container) in ours {
            let what = format!("{}: {}", rendered.name, container.name);
            let uid = pod.security_context.as_ref().and_then(|c| c.run_as_user);
            assert_eq!(uid, Some(image.uid), "{what}: the image's user");
            // The probes are on the admin port the container's settings open.
            let env = container_env(&rendered, container, "pod");
            let admin = env.get("KUBECENSUS_ADMIN_ADDR").unwrap_or_else(|| panic!("{what}: no admin address"));
            let admin_port: i32 = admin.rsplit(':').next().unwrap().parse().unwrap();
            assert_eq!(readiness(container), Some(("/readyz".to_owned(), admin_port)), "{what}");
            let live = container.liveness_probe.as_ref().and_then(|p| p.http_get.as_ref()).expect("a liveness probe");
            assert_eq!(live.path.as_deref(), Some("/livez"), "{what}");
            assert_eq!(resolve_port(container, &live.port), Some(admin_port), "{what}");
            if command_of(container) == "worker" {
                let args = container.args.clone().unwrap_or_default();
                let grace = flag_value(&args, "shutdown-grace").expect("the worker's --shutdown-grace, explicit");
                let grace = humantime::parse_duration(grace).unwrap();
                let period = pod.termination_grace_period_seconds.expect("terminationGracePeriodSeconds");
                assert!(
                    Duration::from_secs(period as u64) >= grace + Duration::from_secs(10),
                    "{what}: {period} s leaves no time past the {grace:?} grace to hand jobs back and exit"
                );
            }
        }
        check_disruption_budgets(&rendered);
    }
}

/// Every workload of kubecensus has a PodDisruptionBudget that selects its pods.
fn check_disruption_budgets(rendered: &Rendered) {
    let budgets = typed::<PodDisruptionBudget>(rendered, "PodDisruptionBudget");
    for deployment in typed::<Deployment>(rendered, "Deployment") {
        let labels = deployment.spec.unwrap().template.metadata.unwrap().labels.unwrap();
        let covered = budgets.iter().any(|b| {
            let selector = b.spec.as_ref().and_then(|s| s.selector.as_ref()).and_then(|s| s.match_labels.clone());
            selector.is_some_and(|s| s.iter().all(|(k, v)| labels.get(k) == Some(v)))
        });
        assert!(covered, "{}: no PodDisruptionBudget for {:?}", rendered.name, deployment.metadata.name);
    }
}

/// A setting of the worker container: its environment variable `env_name`, else the code's
/// default of the setting `id` of [`CommonArgs`].
fn worker_setting(rendered: &Rendered, env_name: &str, id: &str) -> String {
    let pods = pod_specs(rendered);
    let worker = pods.iter().flat_map(|(_, p)| &p.containers).find(|c| command_of(c) == "worker").expect("a worker");
    let env = container_env(rendered, worker, "pod");
    env.get(env_name).cloned().unwrap_or_else(|| default_of(id))
}

#[test]
fn the_keda_trigger_names_the_stream_and_consumer_the_workers_use() {
    let mut checked = 0;
    for rendered in rendered() {
        for scaled in rendered.objects.iter().filter(|o| type_of(o).1 == "ScaledObject") {
            let what = &rendered.name;
            let target = scaled["spec"]["scaleTargetRef"]["name"].as_str().expect("scaleTargetRef.name");
            let deployment = typed::<Deployment>(&rendered, "Deployment")
                .into_iter()
                .find(|d| d.metadata.name.as_deref() == Some(target))
                .unwrap_or_else(|| panic!("{what}: no Deployment {target}"));
            let containers = deployment.spec.clone().unwrap().template.spec.unwrap().containers;
            assert_eq!(command_of(&containers[0]), "worker", "{what}: KEDA scales the workers");
            assert_eq!(deployment.spec.unwrap().replicas, None, "{what}: KEDA owns the replicas");
            let triggers = scaled["spec"]["triggers"].as_array().expect("triggers");
            assert_eq!(triggers.len(), 1, "{what}");
            assert_eq!(triggers[0]["type"], "nats-jetstream", "{what}");
            let metadata = &triggers[0]["metadata"];
            assert_eq!(
                metadata["stream"].as_str(),
                Some(worker_setting(&rendered, "KUBECENSUS_STREAM", "stream").as_str()),
                "{what}"
            );
            assert_eq!(metadata["consumer"].as_str(), Some(CONSUMER), "{what}");
            assert_eq!(metadata["account"], "$G", "{what}: the default account");
            let lag: u32 = metadata["lagThreshold"].as_str().expect("lagThreshold, a string").parse().unwrap();
            assert!(lag > 0, "{what}");
            let endpoint = metadata["natsServerMonitoringEndpoint"].as_str().expect("the monitoring endpoint");
            let (host, port) = endpoint.rsplit_once(':').expect("host:port");
            assert_eq!(port, "8222", "{what}: NATS' monitoring port");
            // With the NATS of with-services in the same namespace, the endpoint is its Service.
            if let Some(nats) = services(&rendered).remove("kubecensus-nats") {
                let namespace = scaled["metadata"]["namespace"].as_str().unwrap_or("kubecensus");
                assert_eq!(host, format!("kubecensus-nats.{namespace}.svc.cluster.local"), "{what}");
                let ports: Vec<i32> = nats.spec.unwrap().ports.unwrap().iter().map(|p| p.port).collect();
                assert!(ports.contains(&8222), "{what}: the NATS Service exposes 8222: {ports:?}");
                let pods = pod_specs(&rendered);
                let server = pods.iter().find(|(n, _)| n == "kubecensus-nats").expect("the NATS StatefulSet");
                let args = server.1.containers[0].args.clone().unwrap_or_default();
                assert_eq!(flag_value(&args, "http_port"), Some(port), "{what}: nats-server serves monitoring");
                assert!(args.iter().any(|a| a == "--jetstream"), "{what}: with JetStream");
            }
            checked += 1;
        }
    }
    assert!(checked >= 2, "the keda component alone and in the all-in-one overlay");
}

/// The Services of a rendering, by name.
fn services(rendered: &Rendered) -> BTreeMap<String, Service> {
    typed::<Service>(rendered, "Service").into_iter().map(|s| (s.metadata.name.clone().unwrap(), s)).collect()
}

#[test]
fn the_settings_name_the_services_with_services_runs() {
    let with_services = rendered().into_iter().find(|r| r.name == "base + with-services").unwrap();
    let pods = pod_specs(&with_services);
    let worker = pods.iter().flat_map(|(_, p)| &p.containers).find(|c| command_of(c) == "worker").unwrap();
    let env = container_env(&with_services, worker, "pod");
    let services = services(&with_services);
    for (setting, service, port) in
        [("DATABASE_URL", "kubecensus-postgres", 5432), ("NATS_URL", "kubecensus-nats", 4222)]
    {
        let url = &env[setting];
        assert!(url.contains(&format!("@{service}:{port}/")) || url.ends_with(&format!("//{service}:{port}")), "{url}");
        let spec = services[service].spec.clone().unwrap();
        assert!(spec.ports.unwrap().iter().any(|p| p.port == port), "{service} exposes {port}");
    }
}

#[test]
fn prometheus_scrapes_every_pod_and_alerts_on_failed_and_stale() {
    let prometheus = rendered().into_iter().find(|r| r.name == "base + prometheus").unwrap();
    let monitor = prometheus.objects.iter().find(|o| type_of(o).1 == "ServiceMonitor").unwrap();
    let services = services(&prometheus);
    let selector = monitor["spec"]["selector"]["matchLabels"].as_object().expect("matchLabels");
    let selected: Vec<&Service> = services
        .values()
        .filter(|s| {
            let labels = s.metadata.labels.clone().unwrap_or_default();
            selector.iter().all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
        })
        .collect();
    assert_eq!(selected.len(), 1, "the ServiceMonitor selects the metrics Service");
    let service = selected[0].spec.clone().unwrap();
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    let port = service
        .ports
        .unwrap()
        .into_iter()
        .find(|p| Some(p.name.as_deref().unwrap_or_default()) == endpoint["port"].as_str());
    let target = port.expect("the endpoint names a port of the Service").target_port.unwrap();
    // The Service selects both workloads' pods, and its target port is their admin port.
    let service_selector = service.selector.unwrap();
    let image = image();
    let pods = pod_specs(&prometheus);
    for (pod, container) in kubecensus_containers(&pods, &image) {
        let deployment = typed::<Deployment>(&prometheus, "Deployment")
            .into_iter()
            .find(|d| d.spec.as_ref().unwrap().template.spec.as_ref() == Some(pod))
            .unwrap();
        let labels = deployment.spec.unwrap().template.metadata.unwrap().labels.unwrap();
        assert!(service_selector.iter().all(|(k, v)| labels.get(k) == Some(v)), "{labels:?}");
        assert_eq!(resolve_port(container, &target), readiness(container).map(|(_, port)| port));
    }
    let rules = alert_rules(&prometheus);
    assert!(rules.iter().any(|(_, expr)| expr.contains(r#"outcome="failed""#)), "an alert on failed runs: {rules:?}");
    assert!(rules.iter().any(|(alert, _)| alert.contains("Stale")), "an alert on stale snapshots: {rules:?}");
}

/// Every alerting rule of the PrometheusRules: (alert, expr).
fn alert_rules(rendered: &Rendered) -> Vec<(String, String)> {
    let mut rules = Vec::new();
    for object in rendered.objects.iter().filter(|o| type_of(o).1 == "PrometheusRule") {
        for group in object["spec"]["groups"].as_array().expect("groups") {
            for rule in group["rules"].as_array().expect("rules") {
                let alert = rule["alert"].as_str().expect("alerting rules only").to_owned();
                let expr = rule["expr"].as_str().expect("an expr").to_owned();
                assert!(rule["labels"]["severity"].is_string(), "{alert}: a severity");
                assert!(rule["annotations"]["summary"].is_string(), "{alert}: a summary");
                rules.push((alert, expr));
            }
        }
    }
    rules
}

/// The base's scheduler and worker containers, run as their pods would run them against a private
/// PostgreSQL, a private NATS and a simulated fleet: ready on their probe path, counting jobs on
/// /metrics, found by KEDA's query, not ready while PostgreSQL is down or while the worker drains
/// after SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_containers_run_against_the_services_and_report_on_their_probes() {
    // Private servers: PostgreSQL is stopped mid-test, and NATS carries the manifests' own stream
    // and subject prefix (no per-test names), with the monitoring port KEDA reads.
    let postgres = TempPostgres::start().await.unwrap();
    let nats = TempNats::start().await.unwrap();
    let env = TestEnv::on(postgres.url("postgres"), nats.url()).await.unwrap();
    let fleet = Fleet::start(FleetSpec { clusters: 2, pods: 20, ..FleetSpec::default() }, &env.dir.join("fleet"))
        .await
        .unwrap();
    let base = kustomize(&base_dir()).unwrap();
    let local = local_pod(&base, &env, &fleet);

    // The scheduler ticks the namespaces every 2 seconds, so its publish counter moves.
    let tick = [
        ("KUBECENSUS_SCHEDULES", "kubernetes_namespaces=*/2 * * * * *"),
        ("KUBECENSUS_TABLES", "kubernetes_namespaces"),
    ];
    let scheduler = start_container(&local, "scheduler", "kubecensus-scheduler-0", &tick);
    let second_scheduler = start_container(&local, "scheduler", "kubecensus-scheduler-1", &tick);
    let mut worker = start_container(&local, "worker", "kubecensus-worker-0", &[]);
    scheduler.wait_ready(200, Duration::from_secs(60)).await;
    worker.wait_ready(200, Duration::from_secs(60)).await;
    let registry = local.dir.join("registry.yaml");

    check_counters_move(&env, &base, &registry, &worker).await;
    check_two_schedulers_make_one_job_per_tick(&env, [&scheduler, &second_scheduler]).await;
    check_alerts_read_served_metrics([&worker, &scheduler]).await;
    // KEDA's trigger finds the workers' consumer where it looks: NATS' /jsz for the account.
    check_keda_finds_the_consumer(nats.monitor_port).await;

    // PostgreSQL down: neither is ready; back: both are.
    postgres.stop().unwrap();
    scheduler.wait_ready(503, Duration::from_secs(30)).await;
    worker.wait_ready(503, Duration::from_secs(30)).await;
    postgres.start_again().await.unwrap();
    scheduler.wait_ready(200, Duration::from_secs(60)).await;
    worker.wait_ready(200, Duration::from_secs(60)).await;

    // SIGTERM while a slow job runs: the worker drains (not ready), finishes the job, exits 0.
    let slow = Faults { latency: Some(Duration::from_secs(2)), ..Faults::default() };
    for cluster in fleet.clusters() {
        fleet.set_faults(&cluster.name, slow.clone());
    }
    scheduler_cli(&env, &base, &registry, &["refresh", "--table", "kubernetes_pods"]).await;
    let running = "SELECT count(*) > 0 FROM runs WHERE status = 'running'";
    env.wait_until("a pods job to run", running, Duration::from_secs(30)).await.unwrap();
    let status = Command::new("kill").args(["-TERM", &worker.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    worker.wait_ready(503, Duration::from_secs(5)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let exit = loop {
        if let Some(exit) = worker.child.try_wait().unwrap() {
            break exit;
        }
        assert!(tokio::time::Instant::now() < deadline, "the worker did not exit after its grace");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(exit.code(), Some(0), "{}", std::fs::read_to_string(&worker.log).unwrap());
}

/// A refresh of the fleet's pods moves the worker's job counter by one job per cluster.
async fn check_counters_move(env: &TestEnv, base: &Rendered, registry: &Path, worker: &Running) {
    let pods_succeeded = [("table", "kubernetes_pods"), ("outcome", "succeeded")];
    let before = worker.metrics().await.count("kubecensus_jobs_total", &pods_succeeded);
    scheduler_cli(env, base, registry, &["refresh", "--wait", "--table", "kubernetes_pods"]).await;
    assert_eq!(worker.metrics().await.count("kubecensus_jobs_total", &pods_succeeded), before + 2.0);
}

/// The scheduler Deployment's two replicas publish every tick, yet each tick makes one job per
/// (cluster, table): the second publish is a duplicate of the first (same `Nats-Msg-Id`), or
/// finds it still pending.
async fn check_two_schedulers_make_one_job_per_tick(env: &TestEnv, schedulers: [&Running; 2]) {
    let ticks =
        "SELECT count(DISTINCT scheduled_at) >= 3 FROM runs WHERE trigger = 'schedule' AND status = 'succeeded'";
    env.wait_until("three scheduled ticks", ticks, Duration::from_secs(30)).await.unwrap();
    let (jobs, jobs_named_by_tick): (i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT job_id), count(DISTINCT (cluster_name, table_name, scheduled_at))
         FROM runs WHERE trigger = 'schedule'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(jobs, jobs_named_by_tick, "a tick made two jobs of a (cluster, table)");
    // Their publish counters say so: at least as many queued as jobs ran, the others refused.
    let (mut queued, mut refused) = (0.0, 0.0);
    for scheduler in schedulers {
        let metrics = scheduler.metrics().await;
        let published =
            |result| metrics.count("kubecensus_jobs_published_total", &[("trigger", "schedule"), ("result", result)]);
        queued += published("queued");
        refused += published("duplicate") + published("already_pending");
    }
    assert!(queued >= jobs as f64, "{queued} queued, {jobs} jobs ran");
    assert!(refused >= 2.0, "the second replica's publishes were not refused");
}

/// Every metric the alerts read is served by the worker or a scheduler.
async fn check_alerts_read_served_metrics(running: [&Running; 2]) {
    let mut served = String::new();
    for process in running {
        served.push_str(&process.metrics_text().await);
    }
    let prometheus = rendered().into_iter().find(|r| r.name == "base + prometheus").unwrap();
    for (alert, expr) in alert_rules(&prometheus) {
        for name in metric_names(&expr) {
            assert!(served.contains(&name), "{alert} reads {name}, which neither binary serves");
        }
    }
}

/// The base's pods on this machine: the Secrets' files (a password the trust authentication
/// ignores, the fleet's tokens and CAs), the fleet's registry naming them where the pod mounts
/// them, and the test's database and NATS. The same registry, with local paths, is written to
/// `<dir>/registry.yaml` for `scheduler refresh`.
fn local_pod<'a>(base: &'a Rendered, env: &TestEnv, fleet: &Fleet) -> LocalPod<'a> {
    let pods = pod_specs(base);
    let worker = pods.iter().find(|(_, p)| command_of(&p.containers[0]) == "worker").unwrap();
    let clusters_mount = worker.1.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| {
            let volume = worker.1.volumes.iter().flatten().find(|v| v.name == m.name).unwrap();
            volume.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some("kubecensus-clusters")
        })
        .expect("the clusters' credentials mounted")
        .mount_path
        .clone();
    let fleet_dir = env.dir.join("fleet");
    let fleet_registry = std::fs::read_to_string(fleet_dir.join("clusters.yaml")).unwrap();
    let mut credentials = BTreeMap::new();
    for cluster in fleet.clusters() {
        credentials.insert(format!("{}.ca.crt", cluster.name), cluster.ca_pem.clone());
        credentials.insert(format!("{}.token", cluster.name), cluster.token.clone());
    }
    let dir = env.dir.join("pods");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("registry.yaml"), &fleet_registry).unwrap();
    let registry = fleet_registry.replace(fleet_dir.to_str().unwrap(), &clusters_mount);
    let services = &env.services;
    LocalPod {
        rendered: base,
        dir,
        secrets: BTreeMap::from([
            ("kubecensus-database".to_owned(), BTreeMap::from([("password".to_owned(), "unused".to_owned())])),
            ("kubecensus-clusters".to_owned(), credentials),
        ]),
        config_files: BTreeMap::from([(("kubecensus-registry".to_owned(), "clusters.yaml".to_owned()), registry)]),
        env: BTreeMap::from([
            ("DATABASE_URL".to_owned(), services.database_url.clone()),
            ("NATS_URL".to_owned(), services.nats_url.clone()),
            ("RUST_LOG".to_owned(), "info".to_owned()),
        ]),
    }
}

/// Runs the `scheduler` command line as a person would next to the pods: on the stream and
/// subject prefix the rendered worker uses.
async fn scheduler_cli(env: &TestEnv, base: &Rendered, registry: &Path, args: &[&str]) -> String {
    let mut services = env.services.clone();
    services.stream = worker_setting(base, "KUBECENSUS_STREAM", "stream");
    services.subject_prefix = worker_setting(base, "KUBECENSUS_SUBJECT_PREFIX", "subject_prefix");
    services.scheduler(&binary("scheduler"), registry, args).await.unwrap()
}

/// Asks NATS' monitoring endpoint what KEDA's nats-jetstream scaler asks
/// (`/jsz?acc=<account>&consumers=true&config=true`, keda pkg/scalers/nats_jetstream_scaler.go)
/// and finds the ScaledObject's stream and consumer in its answer, as the scaler does: without
/// them it would scale on the stream's last sequence number instead of the consumer's backlog.
async fn check_keda_finds_the_consumer(monitor_port: u16) {
    let keda = rendered().into_iter().find(|r| r.name == "base + keda").unwrap();
    let scaled = keda.objects.iter().find(|o| type_of(o).1 == "ScaledObject").unwrap();
    let trigger = &scaled["spec"]["triggers"][0]["metadata"];
    let field = |name: &str| trigger[name].as_str().unwrap().to_owned();
    let path = format!("/jsz?acc={}&consumers=true&config=true", field("account"));
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], monitor_port));
    let Answer { status, body } = probes::get(addr, &path).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let jsz: Value = serde_json::from_str(&body).unwrap();
    let named = |list: &Value, name: String| {
        list.as_array().into_iter().flatten().find(|item| item["name"].as_str() == Some(name.as_str())).cloned()
    };
    let account = named(&jsz["account_details"], field("account")).unwrap_or_else(|| panic!("no account: {body}"));
    let stream = named(&account["stream_detail"], field("stream")).unwrap_or_else(|| panic!("no stream: {body}"));
    let consumer =
        named(&stream["consumer_detail"], field("consumer")).unwrap_or_else(|| panic!("no consumer: {body}"));
    assert!(consumer["num_pending"].is_u64() && consumer["num_ack_pending"].is_u64(), "{consumer}");
}

/// The metric names an expression reads.
fn metric_names(expr: &str) -> Vec<String> {
    expr.match_indices("kubecensus_")
        .map(|(start, _)| expr[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect())
        .collect()
}
