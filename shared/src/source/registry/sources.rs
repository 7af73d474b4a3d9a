//! The registry the services run on: the registry file and the home cluster's Secrets
//! ([`super::home`]) combined, read again every `--registry-refresh` while they run.
//!
//! A source that fails to load (bad YAML, the home cluster unreachable) keeps its last good
//! clusters; the error is logged and counted. A malformed Secret costs only its own cluster. A
//! cluster declared by the file and by a Secret is the file's, one declared by two Secrets the
//! first's: such an overlap is no error (the same cluster kept in two places, as when a file
//! entry takes over from a Secret), so it is logged as a warning and counted once, when it
//! appears, not at every reading, so that an alert on the error counter's rate clears. A
//! reading that changes nothing keeps the same registry, so it costs the services nothing.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::Mutex;

use super::{
    ClusterConfig, Registry,
    home::{HomeArgs, HomeSource},
};
use crate::{Result, model::catalog::Catalog};

/// What a reading of the sources did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refreshed {
    /// The registry is not the one before.
    pub changed: bool,
    /// Every source loaded: a cluster missing now is really missing (not only unreadable).
    pub complete: bool,
}

/// The last good reading of each source.
struct Last {
    file: Registry,
    home: Vec<ClusterConfig>,
    /// When the sources were last read.
    read_at: Instant,
}

/// The combined registry, read again on demand ([`Self::refresh`]).
pub struct LiveRegistry {
    file: PathBuf,
    /// Fields must not be named like a column of its tables.
    catalog: Arc<Catalog>,
    home: Option<HomeSource>,
    last: Mutex<Last>,
    current: RwLock<Arc<Registry>>,
    errors: AtomicU64,
    complete: std::sync::atomic::AtomicBool,
    /// The overlaps of the last reading, each reported when it appeared.
    overlaps: std::sync::Mutex<BTreeSet<String>>,
}

impl LiveRegistry {
    /// Reads every source once. A bad registry file stops start-up (there is no last good one
    /// yet); a home cluster that cannot be read is logged and read again at the next refresh.
    /// An exec plugin of the home cluster's kubeconfig user may run for `exec_timeout`. Every
    /// source's fields are checked against `catalog`'s columns.
    pub async fn start(file: &Path, home: &HomeArgs, exec_timeout: Duration, catalog: Arc<Catalog>) -> Result<Self> {
        let home = HomeSource::new(home, exec_timeout);
        let live = Self {
            file: file.to_owned(),
            catalog,
            last: Mutex::new(Last { file: Registry::default(), home: Vec::new(), read_at: Instant::now() }),
            current: RwLock::new(Arc::default()),
            errors: AtomicU64::new(0),
            complete: false.into(),
            overlaps: std::sync::Mutex::default(),
            home,
        };
        let file = live.read_file()?;
        live.last.lock().await.file = file;
        live.refresh().await;
        Ok(live)
    }

    /// The registry now. Cheap: an `Arc` clone.
    pub fn current(&self) -> Arc<Registry> {
        self.current.read().expect("registry lock").clone()
    }

    /// How many times a source failed to load since start.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Whether every source loaded at the last reading.
    pub fn complete(&self) -> bool {
        self.complete.load(Ordering::Relaxed)
    }

    /// Reads every source again, unless another caller did within `fresh` (then waits for it):
    /// what a worker does on a job for a cluster it has not learned yet.
    pub async fn refresh_unless_within(&self, fresh: Duration) -> Refreshed {
        let last_read = self.last.lock().await.read_at;
        if last_read.elapsed() < fresh {
            return Refreshed { changed: false, complete: self.complete() };
        }
        self.refresh().await
    }

    /// Reads every source again and combines them; keeps a failed source's last good clusters.
    pub async fn refresh(&self) -> Refreshed {
        let mut last = self.last.lock().await;
        let mut complete = true;
        let mut overlaps = BTreeSet::new();
        match self.read_file() {
            Ok(file) => last.file = file,
            Err(err) => {
                complete = false;
                self.failed(&err.to_string());
            }
        }
        if let Some(home) = &self.home {
            match home.load(&self.catalog).await {
                Ok(loaded) => {
                    for bad in &loaded.bad {
                        self.failed(bad);
                    }
                    overlaps.extend(loaded.overlaps);
                    last.home = loaded.clusters;
                }
                Err(err) => {
                    complete = false;
                    self.failed(&err.to_string());
                    // Not read: its last overlaps stand, and are not reported again.
                    overlaps.extend(self.overlaps.lock().expect("overlaps lock").iter().cloned());
                }
            }
        }
        last.read_at = Instant::now();
        let registry = self.combine(&last, &mut overlaps);
        self.report_new(overlaps);
        self.complete.store(complete, Ordering::Relaxed);
        let mut current = self.current.write().expect("registry lock");
        let changed = **current != registry;
        if changed {
            tracing::info!(clusters = registry.clusters.len(), "registry loaded");
            *current = Arc::new(registry);
        }
        Refreshed { changed, complete }
    }

    /// The file's clusters, then the home cluster's not declared in the file (each one that is
    /// added to `overlaps`).
    fn combine(&self, last: &Last, overlaps: &mut BTreeSet<String>) -> Registry {
        let mut registry = last.file.clone();
        for cluster in &last.home {
            if registry.get(&cluster.name).is_some() {
                overlaps.insert(format!(
                    "cluster {} is declared in the registry file and by a Secret; the file's entry is used",
                    cluster.name
                ));
                continue;
            }
            registry.clusters.push(cluster.clone());
        }
        if let Err(err) = registry.check(&self.catalog) {
            self.failed(&format!("{err}; only the registry file's clusters are used"));
            return last.file.clone();
        }
        registry
    }

    /// The registry file; none when it is missing and the home cluster is a source.
    fn read_file(&self) -> Result<Registry> {
        if self.home.is_some() && !self.file.exists() {
            return Ok(Registry::default());
        }
        Registry::load(&self.file, &self.catalog)
    }

    /// Logs (as a warning) and counts the overlaps the last reading did not have; keeps these.
    fn report_new(&self, overlaps: BTreeSet<String>) {
        let mut last = self.overlaps.lock().expect("overlaps lock");
        for overlap in overlaps.difference(&last) {
            crate::ops::metrics::registry_source_errors().inc();
            tracing::warn!("registry source: {overlap}");
        }
        *last = overlaps;
    }

    fn failed(&self, why: &str) {
        crate::ops::metrics::registry_source_errors().inc();
        let errors = self.errors.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::error!(errors, "registry source: {why}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);
    const GOOD: &str = "clusters:\n- name: a\n  server: https://127.0.0.1:1\n  token_env: KC_TEST_TOKEN\n";

    fn temp_file(text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("kc-sources-{}.yaml", uuid::Uuid::new_v4()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[tokio::test]
    async fn a_source_that_fails_keeps_its_last_good_clusters_and_an_unchanged_one_changes_nothing() {
        let file = temp_file(GOOD);
        // A home cluster that cannot be reached: the file's clusters still load.
        let kubeconfig = temp_file(
            "apiVersion: v1\nkind: Config\ncurrent-context: h\nclusters: [{name: h, cluster: {server: 'https://127.0.0.1:1'}}]\n\
             users: [{name: h, user: {token: t}}]\ncontexts: [{name: h, context: {cluster: h, user: h}}]\n",
        );
        let home = HomeArgs {
            home_kubeconfig: Some(kubeconfig),
            argocd_namespaces: vec!["argocd".into()],
            ..HomeArgs::default()
        };
        let catalog = Arc::new(Catalog::builtin());
        let live = LiveRegistry::start(&file, &home, TIMEOUT, catalog.clone()).await.unwrap();
        assert_eq!(live.current().clusters.len(), 1);
        assert!(!live.complete(), "the home cluster did not load");
        assert_eq!(live.errors(), 1);

        let live = LiveRegistry::start(&file, &HomeArgs::default(), TIMEOUT, catalog).await.unwrap();
        let before = live.current();
        assert_eq!(live.refresh().await, Refreshed { changed: false, complete: true });
        assert!(Arc::ptr_eq(&before, &live.current()), "an unchanged registry is the same registry");

        let counted = crate::ops::metrics::registry_source_errors().get();
        std::fs::write(&file, "clusters: [oops").unwrap();
        assert_eq!(live.refresh().await, Refreshed { changed: false, complete: false });
        assert_eq!(live.current().clusters[0].name, "a", "the last good file is kept");
        assert_eq!(live.errors(), 1);
        assert!(crate::ops::metrics::registry_source_errors().get() > counted, "the error is counted");

        std::fs::write(&file, format!("{GOOD}- name: b\n  kubeconfig: k\n")).unwrap();
        assert_eq!(live.refresh().await, Refreshed { changed: true, complete: true });
        assert_eq!(live.current().clusters.len(), 2);
    }
}
