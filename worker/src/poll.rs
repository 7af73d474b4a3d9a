//! One job, from its message to replaced rows: resolve the cluster, list the resource page by
//! page (in each of its registry `namespaces`, for a cluster read only in some), flatten each
//! page into COPY rows for every table of the resource, replace what changed. How it ends (ack,
//! nak or term, and the outcome in `runs`) is `settle.rs`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::jetstream::{AckKind, Message};
use kubecensus::{
    Error, Result,
    model::catalog::{ApiRef, Catalog, Resource, ResourceSource},
    model::flatten::{ClusterContext, Layout},
    model::namespace_fields::NamespaceFields,
    ops::metrics::{self, JobTimer},
    queue::job::Job,
    queue::{Queue, RetryPolicy, UNKNOWN_CLUSTER_RETRY},
    source::kubeapi::{self, ClusterApi, Page, Reach, is_namespaces},
    source::registry::{ClusterConfig, Registry, sources::LiveRegistry},
    store::runs::{self, Outcome},
    store::{self, JobConnection, Refresh, ReplaceOutcome, Scope},
};
use lru::LruCache;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span, instrument};
use uuid::Uuid;

use crate::settle::ack;

/// How long a cluster's client is reused before it is built again, re-reading its credentials
/// (a token file rotated by the kubelet, a kubeconfig edited in place).
const CLIENT_MAX_AGE: Duration = Duration::from_secs(300);
/// How many times a listing starts over after its continue token expired.
const MAX_LIST_RESTARTS: u32 = 3;

/// What every job of this worker needs.
pub struct Poller {
    /// What jobs may list, and how their rows are laid out.
    pub catalog: Arc<Catalog>,
    pub pool: PgPool,
    /// The registry, read again every `registry_refresh`.
    pub registry: Arc<LiveRegistry>,
    pub registry_refresh: Duration,
    pub worker_id: String,
    /// Where jobs come from: they arrive on `<subject_prefix>.jobs.<cluster>.<table>`.
    pub queue: Queue,
    pub policy: JobPolicy,
    /// Clients of the clusters polled last, with the registry entry each was built from;
    /// dropped when one fails so credentials are re-read.
    pub clients: Mutex<LruCache<String, (kube::Client, Instant, ClusterConfig)>>,
}

/// How every job of this worker runs.
pub struct JobPolicy {
    /// Objects per listed page.
    pub page_size: u32,
    /// Bytes of new rows a job holds in memory; past it, they go to the session's staging.
    pub in_place_limit: usize,
    /// Whether replaces record object changes (`--change-history`).
    pub change_history: bool,
    /// Attempts and delays of failed jobs.
    pub retry: RetryPolicy,
    /// The longest a job may run.
    pub timeout: Duration,
    /// The longest an exec credential plugin may run.
    pub exec_timeout: Duration,
    /// Deliveries of a job for a cluster missing from the registry that are handed back; the
    /// next one is rejected.
    pub unknown_cluster_hand_backs: u32,
    /// The consumer's ack wait (as NATS has it, whatever this worker's flag says): progress acks
    /// and run heartbeats go out every third of it.
    pub ack_wait: Duration,
}

/// What one job lists and how its rows are laid out.
struct Listing<'a> {
    api: ClusterApi<'a>,
    resource: &'a Resource,
    /// What is listed: the resource's `api`, the custom kind as the cluster serves it, or, for
    /// the target of every other custom kind, each such kind the cluster's CRDs define.
    apis: Vec<ApiRef>,
    /// At most this many objects of each API (a custom kind's `limit`).
    limit: Option<u32>,
    /// The rows the job replaces.
    scope: Scope,
    /// One per table of the resource, in catalog order.
    layouts: Vec<Layout<'a>>,
    context: ClusterContext,
    namespaces: NamespaceFields,
    /// The namespaces the cluster is read in (its registry `namespaces`); empty: every one.
    read_in: &'a [String],
}

impl Poller {
    /// Runs one job message to its end. Never panics on bad input; always acks, naks or terms.
    /// `abandon` fires when the worker must stop: the job is then handed back to the queue.
    pub async fn handle(&self, message: Message, abandon: CancellationToken) {
        let mut timer = JobTimer::start();
        let delivered = message.info().map(|info| info.delivered.max(1) as u32).unwrap_or(1);
        let job = match Job::parse(&self.catalog, &message.payload) {
            Ok(job) => job,
            Err(err) => {
                return self.reject(&message, Job::unchecked(&message.payload).as_ref(), err.to_string(), timer).await;
            }
        };
        timer.set_table(self.catalog.metric_table(&job.table));
        // The subject is what keeps one job per (cluster, table) in the stream: a body that
        // names another (cluster, table) would slip past that limit.
        let expected_subject = job.subject(&self.queue.subject_prefix);
        if message.subject.as_str() != expected_subject {
            let why = format!("a job for {expected_subject} was published on another subject");
            return self.reject(&message, Some(&job), why, timer).await;
        }
        // A job from the future would outrank every job scheduled before its time.
        if let Err(err) = job.check_time(chrono::Utc::now()) {
            return self.reject(&message, Some(&job), err.to_string(), timer).await;
        }
        let Some((registry, cluster)) = self.cluster_of(&job).await else {
            return self.unknown_cluster(&message, &job, delivered, timer).await;
        };
        let cluster = &cluster;
        let span = info_span!("job", job = %job.id, cluster = %job.cluster, table = %job.table, delivered);
        async move {
            let (run_id, attempt) = match runs::start(&self.pool, &job, delivered, &self.worker_id).await {
                Ok(started) => started,
                Err(err) => {
                    tracing::error!(%err, "cannot record the run; handing the job back");
                    return ack(&message, AckKind::Nak(Some(self.policy.retry.base))).await;
                }
            };
            let heartbeat = self.heartbeat(&message, run_id);
            let throttled = AtomicU32::new(0);
            let result = tokio::select! {
                result = self.poll(&job, &registry, cluster, run_id, &throttled) => result,
                () = heartbeat => unreachable!("the heartbeat never ends"),
                () = abandon.cancelled() => Err(Error::ShuttingDown),
                () = tokio::time::sleep(self.policy.timeout) => Err(Error::TimedOut(self.policy.timeout)),
            };
            let throttled = throttled.load(Ordering::Relaxed);
            self.settle(&message, &job, (attempt, throttled), run_id, result, timer).await;
        }
        .instrument(span)
        .await
    }

    /// Keeps the message and the run alive while the job runs.
    async fn heartbeat(&self, message: &Message, run_id: Uuid) {
        let mut ticks = tokio::time::interval(self.policy.ack_wait / 3);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            ack(message, AckKind::Progress).await;
            if let Err(err) = runs::heartbeat(&self.pool, run_id).await {
                tracing::warn!(%err, "cannot record a heartbeat");
            }
        }
    }

    /// The registry and the job's cluster in it; reads the sources again (at most every
    /// [`UNKNOWN_CLUSTER_RETRY`]) when the cluster is not in it yet.
    async fn cluster_of(&self, job: &Job) -> Option<(Arc<Registry>, ClusterConfig)> {
        let find = |registry: Arc<Registry>| registry.get(&job.cluster).cloned().map(|cluster| (registry, cluster));
        if let Some(found) = find(self.registry.current()) {
            return Some(found);
        }
        self.registry.refresh_unless_within(UNKNOWN_CLUSTER_RETRY).await;
        find(self.registry.current())
    }

    /// Lists the job's resource from `cluster` (counting throttled answers into `throttled`)
    /// and replaces its rows.
    ///
    /// # Errors
    /// [`Error::OutsideNamespaces`] for a cluster-scoped resource of a cluster read only in some
    /// namespaces (the job is `skipped`), or any error of the requests and the replace.
    #[instrument(skip_all)]
    async fn poll(
        &self,
        job: &Job,
        registry: &Registry,
        cluster: &ClusterConfig,
        run_id: Uuid,
        throttled: &AtomicU32,
    ) -> Result<ReplaceOutcome> {
        let (resource, target) = (self.catalog.target(&job.table))
            .ok_or_else(|| Error::MalformedJob(format!("unknown table {}", job.table)))?;
        let client = self.client(cluster).await?;
        let api = ClusterApi::new(&client, throttled);
        let cluster_uid = kubeapi::cluster_uid(&api, &cluster.name).await?;
        store::record_contact(&self.pool, &cluster.name, &cluster_uid).await?;
        let scope = Scope::of(&self.catalog, target);
        // A cluster read only in some namespaces is never asked for a cluster-scoped list: it
        // would answer 403, and the job is skipped instead, saying why.
        let outside = |listed: &ApiRef| match cluster.cluster_scoped_skipped() {
            Some(why) if !listed.namespaced && !is_namespaces(listed) => {
                Err(Error::OutsideNamespaces(format!("{why} ({} is cluster-scoped)", listed.plural)))
            }
            _ => Ok(()),
        };
        let apis = match &target.kind {
            Some(kind) if kind.is_every_kind() => {
                outside(&kubeapi::catalog_api(&self.catalog, "kubernetes_custom_resource_definitions")?)?;
                self.other_kinds(&api, &scope.excluded_kinds).await?
            }
            Some(kind) => vec![kubeapi::find_kind(&api, kind).await?],
            None => vec![resource.api.clone()],
        };
        if matches!(resource.source, ResourceSource::List | ResourceSource::Custom) {
            apis.iter().try_for_each(outside)?;
        }
        let namespaces = self.namespace_fields(&api, resource, registry, cluster).await?;
        let fields = registry.field_names();
        let namespace_field_names = namespaces.names().to_vec();
        let listing = Listing {
            api,
            resource,
            apis,
            limit: target.kind.as_ref().and_then(|kind| kind.limit),
            scope,
            layouts: resource
                .tables
                .iter()
                .map(|table| Layout { table, fields: &fields, namespace_fields: &namespace_field_names })
                .collect(),
            context: ClusterContext {
                name: cluster.name.clone(),
                uid: cluster_uid,
                field_values: fields.iter().map(|field| cluster.fields.get(field).cloned()).collect(),
            },
            namespaces,
            read_in: &cluster.namespaces,
        };
        let mut conn = JobConnection::acquire(&self.pool).await?;
        self.load_and_replace(&mut conn, &listing, job, run_id).await
    }

    /// Lists the resource page by page and replaces the cluster's rows with the run's outcome,
    /// writing only the rows that changed (see [`kubecensus::store::replace`]). New rows are held
    /// in memory up to `in_place_limit` bytes, then streamed into the session's staging. The
    /// connection is released to the pool only when no staging is left on it and no statement
    /// failed half-way (a COPY above all can leave it out of step).
    async fn load_and_replace(
        &self,
        conn: &mut JobConnection,
        listing: &Listing<'_>,
        job: &Job,
        run_id: Uuid,
    ) -> Result<ReplaceOutcome> {
        let (cluster, scope) = (&listing.context.name, listing.scope.clone());
        let mut refresh = Refresh::begin(conn, cluster, scope, listing.resource, &listing.layouts).await?;
        refresh.set_history(self.policy.change_history);
        let result = match self.load(conn, listing, &mut refresh).await {
            Ok(skipped) => {
                let outcome = Outcome { throttled: listing.api.throttled(), ..outcome_of(&skipped) };
                let replaced = refresh.commit(conn, job, run_id, &outcome).await;
                if let Ok(ReplaceOutcome::Replaced(rows)) = &replaced {
                    let table = self.catalog.metric_table(&job.table);
                    metrics::worker().replaced(table, rows.total, rows.inserted, rows.deleted, skipped.len() as u64);
                }
                replaced
            }
            Err(err) => {
                if let Err(discard) = refresh.discard(conn).await {
                    tracing::warn!(err = %discard, "cannot drop the job's staging; it goes with the connection");
                }
                Err(err)
            }
        };
        if !refresh.staged() && !result.as_ref().is_err_and(Error::taints_connection) {
            conn.release();
        }
        result
    }

    /// The kinds the cluster's CRDs define but `named` (`group/Kind`, the kinds with jobs of
    /// their own), each as the cluster serves it (its preferred version). A CRD whose kind is not
    /// served (not established yet) is left out.
    async fn other_kinds(&self, client: &ClusterApi<'_>, named: &[String]) -> Result<Vec<ApiRef>> {
        let mut apis = Vec::new();
        for kind in kubeapi::defined_kinds(client, &self.catalog, self.policy.page_size).await? {
            if named.contains(&kind.key()) {
                continue;
            }
            match kubeapi::find_kind(client, &kind).await {
                Ok(api) => apis.push(api),
                Err(Error::NotServed(why)) => tracing::debug!(%why, "a CRD's kind is not served; left out"),
                Err(err) => return Err(err),
            }
        }
        Ok(apis)
    }

    /// Lists every API of the listing (in each namespace the cluster is read in, for a cluster
    /// read only in some), page by page, into `refresh`; returns why objects were skipped. An
    /// expired continue token starts the whole listing over (a bounded number of times), so what
    /// is written is always one consistent list of each API, and every namespace's objects are
    /// replaced as one set.
    async fn load(
        &self,
        conn: &mut PgConnection,
        listing: &Listing<'_>,
        refresh: &mut Refresh<'_>,
    ) -> Result<Vec<String>> {
        let mut restarts = 0;
        let mut body = Vec::new();
        'listing: loop {
            let mut skipped = Vec::new();
            let reached: Vec<(&ApiRef, Reach<'_>)> = listing
                .apis
                .iter()
                .flat_map(|api| Reach::of(api, listing.read_in).into_iter().map(move |reach| (api, reach)))
                .collect();
            for (api, reach) in reached {
                match self.load_api(conn, listing, (api, reach), refresh, &mut skipped, &mut body).await {
                    Err(why @ Error::Expired { .. }) if restarts < MAX_LIST_RESTARTS => {
                        restarts += 1;
                        tracing::warn!(%why, restarts, "continue token expired; listing again from the start");
                        refresh.restart(conn).await?;
                        continue 'listing;
                    }
                    result => result?,
                }
            }
            return Ok(skipped);
        }
    }

    /// Lists one API where `reach` says, page by page, into `refresh` (at most the listing's
    /// `limit` objects), reading each page into the reused `body`.
    async fn load_api(
        &self,
        conn: &mut PgConnection,
        listing: &Listing<'_>,
        (api, reach): (&ApiRef, Reach<'_>),
        refresh: &mut Refresh<'_>,
        skipped: &mut Vec<String>,
        body: &mut Vec<u8>,
    ) -> Result<()> {
        let mut rows: Vec<Vec<u8>> = vec![Vec::new(); listing.layouts.len()];
        let mut left = listing.limit.unwrap_or(u32::MAX);
        let mut continue_token = None;
        loop {
            let page_size = self.policy.page_size.min(left);
            let (source, client) = (listing.resource.source, &listing.api);
            let page = kubeapi::fetch(client, source, api, reach, page_size, continue_token.as_deref(), body).await?;
            // A server that ignores `limit` (some aggregated APIs) may send more than asked.
            flatten_page(listing, &page, left as usize, &mut rows, skipped);
            left = left.saturating_sub(page.item_count() as u32);
            for (index, table_rows) in rows.iter_mut().enumerate() {
                refresh.add(index, table_rows);
                table_rows.clear();
            }
            if refresh.held_bytes() > self.policy.in_place_limit {
                refresh.spill(conn).await?;
                tracing::debug!(rows = refresh.rows(), "page listed; new rows staged");
            }
            match page.continue_token {
                Some(token) if left > 0 => continue_token = Some(token),
                _ => return Ok(()),
            }
        }
    }

    /// The namespace fields of the cluster's registry entry, with its namespaces' labels when a
    /// rule copies a label (only for resources with namespaced tables).
    async fn namespace_fields(
        &self,
        client: &ClusterApi<'_>,
        resource: &Resource,
        registry: &Registry,
        cluster: &ClusterConfig,
    ) -> Result<NamespaceFields> {
        let mut fields = registry.namespace_fields_of(cluster);
        let has_namespaces = resource.tables.iter().any(|table| table.namespace_column.is_some());
        if has_namespaces && fields.needs_labels() {
            let labels = kubeapi::namespace_labels(client, &self.catalog, self.policy.page_size, &cluster.namespaces);
            fields.set_labels(labels.await?);
        }
        Ok(fields)
    }

    /// The cluster's cached client, unless it is old or its registry entry changed since (a
    /// rotated credential in a Secret); else a new one.
    async fn client(&self, cluster: &ClusterConfig) -> Result<kube::Client> {
        if let Some((client, built, entry)) = self.clients.lock().await.get(&cluster.name)
            && built.elapsed() < CLIENT_MAX_AGE
            && entry == cluster
        {
            return Ok(client.clone());
        }
        let client = cluster.client(self.policy.exec_timeout).await?;
        self.clients.lock().await.put(cluster.name.clone(), (client.clone(), Instant::now(), cluster.clone()));
        Ok(client)
    }
}

/// Appends the COPY rows of `page`'s first `most` items to `rows` (one buffer per table of the
/// resource), one object at a time, and why each object that could not be read was skipped to
/// `skipped`.
fn flatten_page(listing: &Listing<'_>, page: &Page, most: usize, rows: &mut [Vec<u8>], skipped: &mut Vec<String>) {
    skipped.extend(page.skipped.iter().cloned());
    for object in page.objects().take(most) {
        match object {
            Ok(object) => {
                for (layout, rows) in listing.layouts.iter().zip(rows.iter_mut()) {
                    layout.write_rows_with(&object, &listing.context, Some(&listing.namespaces), rows);
                }
            }
            Err(why) => skipped.push(why),
        }
    }
}

/// A successful run's outcome, saying how many objects were skipped and why the first was.
fn outcome_of(skipped: &[String]) -> Outcome {
    Outcome {
        objects_skipped: skipped.len() as u32,
        error: skipped.first().map(|first| format!("{} objects skipped; first: {first}", skipped.len())),
        ..Outcome::succeeded()
    }
}
