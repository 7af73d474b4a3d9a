//! The jobs stream's settings, and an existing stream checked against them: a stream made by
//! hand, by an older kubecensus or with another replica count is reported setting by setting,
//! never silently used (a work-queue stream that keeps more than one message per subject, or
//! one replica where three were asked, would quietly break what `queue` promises).

use std::time::Duration;

use async_nats::jetstream::{
    self, ErrorCode,
    context::{CreateStreamErrorKind, GetStreamErrorKind},
    stream::{self, DiscardPolicy, RetentionPolicy, StorageType},
};

use super::{DUPLICATE_WINDOW, MAX_AGE, Queue, through_elections};
use crate::{Error, Result};

impl Queue {
    /// The stream's settings: a work queue on file storage, one message per subject (a new one
    /// is refused while one is held), `Nats-Msg-Id`s remembered for [`DUPLICATE_WINDOW`],
    /// `replicas` copies (JetStream's Raft group; 3 on a three-node cluster).
    pub fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.stream.clone(),
            subjects: vec![self.subjects()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            max_messages_per_subject: 1,
            discard: DiscardPolicy::New,
            discard_new_per_subject: true,
            duplicate_window: DUPLICATE_WINDOW,
            max_age: MAX_AGE,
            num_replicas: self.replicas,
            ..Default::default()
        }
    }

    /// Creates the stream when there is none; an existing stream must have exactly
    /// [`Self::stream_config`]'s settings. NATS errors are tried again for
    /// [`super::PUBLISH_RETRY_FOR`] (a cluster electing leaders).
    ///
    /// # Errors
    /// [`Error::Nats`] when NATS does not answer (a JetStream cluster without a meta leader, for
    /// a few seconds of an election); [`Error::Settings`] when the stream exists with other
    /// settings: the message names each setting, its value and the one wanted, and what to do.
    pub async fn ensure_stream(&self, js: &jetstream::Context) -> Result<()> {
        through_elections(|| self.ensure_stream_once(js)).await
    }

    /// [`Self::ensure_stream`], tried once.
    pub(super) async fn ensure_stream_once(&self, js: &jetstream::Context) -> Result<()> {
        let wanted = self.stream_config();
        let found = match self.found_config(js).await? {
            Some(found) => found,
            None => match js.create_stream(wanted.clone()).await {
                Ok(_) => return Ok(()),
                // Another process created it in between: with the same settings creating is a
                // no-op, with others NATS refuses; read what is there.
                Err(err) if matches!(err.kind(), CreateStreamErrorKind::JetStream(js_err) if js_err.error_code() == ErrorCode::STREAM_NAME_EXIST) => {
                    self.found_config(js).await?.unwrap_or_else(|| wanted.clone())
                }
                Err(err) => return Err(Error::nats(format!("cannot create stream {}", self.stream), err)),
            },
        };
        let differences = differences(&wanted, &found);
        if differences.is_empty() {
            return Ok(());
        }
        Err(Error::nats_setting(format!(
            "stream {} exists with other settings than kubecensus uses: {}; change them (`nats stream edit {}` \
             changes the replicas, limits and duplicate window in place), or remove the stream (`nats stream rm {}`: \
             its pending jobs are published again at their next tick) and kubecensus creates it, or start \
             kubecensus with the stream's --stream-replicas",
            self.stream,
            differences.join(", "),
            self.stream,
            self.stream
        )))
    }
}

impl Queue {
    /// The existing stream's settings, `None` when there is no stream.
    async fn found_config(&self, js: &jetstream::Context) -> Result<Option<stream::Config>> {
        match js.get_stream(&self.stream).await {
            Ok(stream) => Ok(Some(stream.cached_info().config.clone())),
            Err(err) if matches!(err.kind(), GetStreamErrorKind::JetStream(js_err) if js_err.error_code() == ErrorCode::STREAM_NOT_FOUND) => {
                Ok(None)
            }
            Err(err) => Err(Error::nats(format!("stream {}", self.stream), err)),
        }
    }
}

/// Each setting kubecensus relies on where `found` differs from `wanted`, as `name is found
/// (kubecensus wants wanted)`.
pub fn differences(wanted: &stream::Config, found: &stream::Config) -> Vec<String> {
    let mut differences = Vec::new();
    let mut compare = |name: &str, wanted: String, found: String| {
        if wanted != found {
            differences.push(format!("{name} is {found} (kubecensus wants {wanted})"));
        }
    };
    compare("subjects", wanted.subjects.join(" "), found.subjects.join(" "));
    compare("retention", format!("{:?}", wanted.retention), format!("{:?}", found.retention));
    compare("storage", format!("{:?}", wanted.storage), format!("{:?}", found.storage));
    compare("replicas", wanted.num_replicas.max(1).to_string(), found.num_replicas.max(1).to_string());
    compare(
        "max messages per subject",
        wanted.max_messages_per_subject.to_string(),
        found.max_messages_per_subject.to_string(),
    );
    compare("discard", format!("{:?}", wanted.discard), format!("{:?}", found.discard));
    compare(
        "discard new per subject",
        wanted.discard_new_per_subject.to_string(),
        found.discard_new_per_subject.to_string(),
    );
    compare("duplicate window", seconds(wanted.duplicate_window), seconds(found.duplicate_window));
    compare("max age", seconds(wanted.max_age), seconds(found.max_age));
    differences
}

fn seconds(duration: Duration) -> String {
    format!("{}s", duration.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_differing_setting_is_named_with_both_values() {
        let queue = Queue { stream: "JOBS".into(), subject_prefix: "kc".into(), replicas: 3 };
        let wanted = queue.stream_config();
        assert!(differences(&wanted, &wanted).is_empty());
        let found = stream::Config {
            num_replicas: 1,
            max_messages_per_subject: -1,
            duplicate_window: Duration::from_secs(60),
            ..wanted.clone()
        };
        assert_eq!(
            differences(&wanted, &found),
            [
                "replicas is 1 (kubecensus wants 3)",
                "max messages per subject is -1 (kubecensus wants 1)",
                "duplicate window is 60s (kubecensus wants 120s)",
            ]
        );
    }
}
