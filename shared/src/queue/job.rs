//! The job message: "list this resource of this cluster now". Small JSON, no credentials.
//!
//! Published on `<prefix>.jobs.<cluster>.<table>`; any NATS client can publish one (README).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Error, Result, model::catalog::Catalog, source::registry::is_cluster_name};

/// How far ahead of a worker's clock a job's `scheduled_at` may be: the clocks of the
/// scheduler (or of whoever published the job) and of the worker may differ by this much. A job
/// from further ahead is rejected ([`Job::check_time`]): it would otherwise outrank every job
/// scheduled before its time, and its (cluster, table) would not refresh until then.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// One poll job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub id: Uuid,
    pub cluster: String,
    /// The job target: the job table of a catalog resource (e.g. `kubernetes_pods`, which also
    /// fills `kubernetes_pod_containers`), or one custom kind
    /// (`kubernetes_custom_resources/<group>/<Kind>`).
    pub table: String,
    pub trigger: Trigger,
    /// The cron tick (or the request time, for a manual job). A job never replaces rows from a
    /// later-scheduled job.
    pub scheduled_at: DateTime<Utc>,
}

/// Why a job exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Schedule,
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::Manual => "manual",
        }
    }
}

impl Job {
    /// A job for one cluster's resource. `table` may be any table of the resource (the job is
    /// named by the resource's job table) or a target's name; a table filled by several targets
    /// (custom resources) must be named by one of them; `catalog` says which.
    pub fn new(
        catalog: &Catalog,
        cluster: &str,
        table: &str,
        trigger: Trigger,
        scheduled_at: DateTime<Utc>,
    ) -> Result<Self> {
        let target = match catalog.targets_of(table).as_slice() {
            [] => return Err(Error::MalformedJob(format!("unknown table `{table}`"))),
            [target] => target.name.clone(),
            [first, ..] => {
                return Err(Error::MalformedJob(format!("`{table}` has a job per kind, such as `{}`", first.name)));
            }
        };
        let job = Self { id: Uuid::now_v7(), cluster: cluster.to_owned(), table: target, trigger, scheduled_at };
        job.check(catalog)?;
        Ok(job)
    }

    /// Reads a job message; rejects bad JSON, a malformed cluster name and tables that are not
    /// a target of `catalog`.
    pub fn parse(catalog: &Catalog, payload: &[u8]) -> Result<Self> {
        let job: Self = serde_json::from_slice(payload).map_err(Error::JobJson)?;
        job.check(catalog)?;
        Ok(job)
    }

    /// Checks that the job was not scheduled more than [`MAX_CLOCK_SKEW`] after `now` (the
    /// worker's clock).
    ///
    /// # Errors
    /// [`Error::MalformedJob`] naming both times, for a job from further ahead.
    pub fn check_time(&self, now: DateTime<Utc>) -> Result<()> {
        let skew = chrono::Duration::from_std(MAX_CLOCK_SKEW).expect("a small duration");
        if self.scheduled_at <= now + skew {
            return Ok(());
        }
        Err(Error::MalformedJob(format!(
            "scheduled_at {} is more than {} ahead of this worker's clock ({})",
            self.scheduled_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            humantime::format_duration(MAX_CLOCK_SKEW),
            now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )))
    }

    /// The job a message [`Self::parse`] rejected, as the message gave it, when it has a job's
    /// shape: its rejected run names the job's id, cluster and table, so whoever waits for the job
    /// (`scheduler refresh --wait`) sees it end. Its fields are unchecked: only for the record.
    pub fn unchecked(payload: &[u8]) -> Option<Self> {
        serde_json::from_slice(payload).ok()
    }

    fn check(&self, catalog: &Catalog) -> Result<()> {
        if !is_cluster_name(&self.cluster) {
            return Err(Error::MalformedJob(format!("`{}` is not a valid cluster name", self.cluster.escape_debug())));
        }
        if catalog.target(&self.table).is_some() {
            return Ok(());
        }
        match catalog.targets_of(&self.table).first() {
            Some(target) => {
                Err(Error::MalformedJob(format!("`{}` is filled by jobs for `{}`", self.table, target.name)))
            }
            None => Err(Error::MalformedJob(format!("unknown table `{}`", self.table.escape_debug()))),
        }
    }

    /// The NATS subject: one per (cluster, table), so the stream holds at most one job for each.
    pub fn subject(&self, prefix: &str) -> String {
        format!("{prefix}.jobs.{}.{}", self.cluster, self.table)
    }

    /// The `Nats-Msg-Id`: for a scheduled job, the same for every publish of the same tick (so a
    /// second scheduler replica or a repeated publish makes no second job); for a manual job, its id.
    pub fn message_id(&self) -> String {
        match self.trigger {
            Trigger::Schedule => format!("{}/{}/{}", self.cluster, self.table, self.scheduled_at.timestamp()),
            Trigger::Manual => self.id.to_string(),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a job serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_its_subject_and_message_id() {
        let catalog = Catalog::builtin();
        let tick = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let job = Job::new(&catalog, "prod-1", "kubernetes_pod_containers", Trigger::Schedule, tick).unwrap();
        assert_eq!(job.table, "kubernetes_pods");
        assert_eq!(Job::parse(&catalog, &job.to_json()).unwrap(), job);
        assert_eq!(job.subject("kc"), "kc.jobs.prod-1.kubernetes_pods");
        let again = Job::new(&catalog, "prod-1", "kubernetes_pods", Trigger::Schedule, tick).unwrap();
        assert_eq!(job.message_id(), again.message_id());
        let manual = Job::new(&catalog, "prod-1", "kubernetes_pods", Trigger::Manual, tick).unwrap();
        assert_eq!(manual.message_id(), manual.id.to_string());
    }

    #[test]
    fn a_custom_kind_is_its_own_job_and_the_shared_table_names_none() {
        let catalog = Catalog::builtin();
        let tick = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let name = "kubernetes_custom_resources/helm.toolkit.fluxcd.io/HelmRelease";
        let job = Job::new(&catalog, "prod-1", name, Trigger::Manual, tick).unwrap();
        assert_eq!(Job::parse(&catalog, &job.to_json()).unwrap().table, name);
        assert_eq!(job.subject("kc"), format!("kc.jobs.prod-1.{name}"));
        let err =
            Job::new(&catalog, "prod-1", "kubernetes_custom_resources", Trigger::Manual, tick).unwrap_err().to_string();
        assert!(err.contains("a job per kind"), "{err}");
        let err =
            Job::new(&catalog, "prod-1", "kubernetes_custom_resources/x.io/Nope", Trigger::Manual, tick).unwrap_err();
        assert!(err.to_string().contains("unknown table"), "{err}");
    }

    #[test]
    fn a_job_is_checked_against_the_catalog_it_is_given() {
        let tick = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let builtin = Catalog::builtin();
        let pods = Job::new(&builtin, "prod-1", "kubernetes_pods", Trigger::Manual, tick).unwrap();
        let widgets = "- api: {group: example.com, version: v1, kind: Widget, plural: widgets, namespaced: true}\n  \
                       schedule: '0 * * * * *'\n  tables:\n  - name: widgets\n    columns: ['size int spec.size']\n";
        let other = Catalog::parse(widgets, &[]).unwrap();
        let err = Job::parse(&other, &pods.to_json()).unwrap_err().to_string();
        assert!(err.contains("unknown table `kubernetes_pods`"), "{err}");
        let widget = Job::new(&other, "prod-1", "widgets", Trigger::Manual, tick).unwrap();
        assert_eq!(Job::parse(&other, &widget.to_json()).unwrap(), widget);
        assert!(Job::parse(&builtin, &widget.to_json()).is_err(), "the built-in catalog has no widgets");
    }

    #[test]
    fn a_job_from_past_the_clock_skew_is_refused_with_both_times() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let catalog = Catalog::builtin();
        let job = |ahead| Job::new(&catalog, "prod-1", "kubernetes_pods", Trigger::Manual, now + ahead).unwrap();
        job(chrono::Duration::minutes(5)).check_time(now).unwrap();
        job(chrono::Duration::days(-400)).check_time(now).unwrap();
        let err = job(chrono::Duration::minutes(6)).check_time(now).unwrap_err().to_string();
        assert!(err.contains("2023-11-14T22:19:20Z") && err.contains("(2023-11-14T22:13:20Z)"), "{err}");
        assert!(err.contains("more than 5m ahead"), "{err}");
    }

    #[test]
    fn malformed_messages_are_rejected_with_the_reason() {
        let catalog = Catalog::builtin();
        let cases = [
            (&b"{not json"[..], "not a job message"),
            (br#"{"id":"00000000-0000-0000-0000-000000000000","cluster":"a","table":"x; drop table runs","trigger":"manual","scheduled_at":"2024-01-01T00:00:00Z"}"#, "unknown table"),
            (br#"{"id":"00000000-0000-0000-0000-000000000000","cluster":"A.B","table":"kubernetes_pods","trigger":"manual","scheduled_at":"2024-01-01T00:00:00Z"}"#, "not a valid cluster name"),
            (br#"{"id":"00000000-0000-0000-0000-000000000000","cluster":"a","table":"kubernetes_pod_containers","trigger":"manual","scheduled_at":"2024-01-01T00:00:00Z"}"#, "filled by jobs for `kubernetes_pods`"),
            (br#"{"id":"00000000-0000-0000-0000-000000000000","cluster":"a","table":"kubernetes_pods","trigger":"manual","scheduled_at":"2024-01-01T00:00:00Z","token":"x"}"#, "unknown field"),
        ];
        for (payload, why) in cases {
            let err = Job::parse(&catalog, payload).unwrap_err().to_string();
            assert!(err.contains(why), "{}: {err}", String::from_utf8_lossy(payload));
        }
    }
}
