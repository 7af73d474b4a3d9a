//! Sending one request to a cluster's API server and classifying its answer.
//!
//! A [`ClusterApi`] is a job's handle on a cluster: its kube client and a count of the times the
//! server throttled the job. A throttled answer (429 Too Many Requests, or 503 Service
//! Unavailable with a `Retry-After`, as API Priority and Fairness and a busy server send) is
//! waited out and the *same* request sent again (the same page, the same continue token), within
//! the job's attempt, as client-go does: `rest/request.go` sends a request again up to
//! `maxRetries` (10 by default) times while `checkWait` finds a 429 or 5xx with `Retry-After`
//! (kubernetes/kubernetes #26871). Any other error status becomes the [`Error`] that says what
//! the worker does with the job.

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use http::{StatusCode, header::RETRY_AFTER};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::Value;

use crate::{Error, Result, ops::metrics};

/// How many times one request is sent again after a throttled answer: client-go's default
/// `maxRetries` (`NewRequest` in `k8s.io/client-go/rest/request.go`).
pub const MAX_THROTTLED_RETRIES: u32 = 10;
/// The longest wait for one `Retry-After`: API Priority and Fairness asks for 1 s
/// (`retryAfter` in `k8s.io/apiserver/pkg/server/filters/maxinflight.go`); a proxy asking for an
/// hour would otherwise hold the job until its `--job-timeout`.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// The most of a non-`Status` error body (APF's `Too many requests, please try again later.`, a
/// proxy's page) quoted in an error.
const QUOTED_BODY_CHARS: usize = 200;

/// A job's handle on one cluster's API: the client, and how often the server throttled the job.
#[derive(Clone, Copy)]
pub struct ClusterApi<'a> {
    pub client: &'a kube::Client,
    throttled: &'a AtomicU32,
}

impl<'a> ClusterApi<'a> {
    /// `client`'s requests, counting throttled answers into `throttled` (the run's
    /// `runs.throttled`).
    pub fn new(client: &'a kube::Client, throttled: &'a AtomicU32) -> Self {
        Self { client, throttled }
    }

    /// Sends the request `build` makes and reads the whole body into `body` (emptied first: a
    /// listing passes the same buffer for every page). A throttled answer is waited out
    /// (`Retry-After`, at most [`MAX_RETRY_AFTER`]) and the request built and sent again, up to
    /// [`MAX_THROTTLED_RETRIES`] times; each throttled answer is counted here and in
    /// `kubecensus_api_throttled_total`. `list` requests are counted in
    /// `kubecensus_api_list_requests_total`.
    ///
    /// # Errors
    /// What the answer's status means ([`Received::check`]), or [`Error::ClusterRequest`] when
    /// no complete response came.
    pub async fn send_into(
        &self,
        build: impl Fn() -> Result<http::Request<Vec<u8>>>,
        body: &mut Vec<u8>,
        list: bool,
    ) -> Result<()> {
        let mut retries = 0;
        loop {
            let received = receive_into(self.client, build()?, body).await;
            if list {
                metrics::worker().list_request(received.as_ref().ok().map(|response| response.status.as_u16()));
            }
            let received = received?;
            let Some(wait) = received.throttled_for() else {
                return received.check(body);
            };
            self.throttled.fetch_add(1, Ordering::Relaxed);
            metrics::worker().throttled(received.status.as_u16());
            if retries == MAX_THROTTLED_RETRIES {
                return received.check(body).map_err(|err| match err {
                    Error::Throttled { path, status, reason, retry_after } => {
                        let waits = format!("still throttled after {retries} waits");
                        let reason = if reason.is_empty() { waits } else { format!("{reason}; {waits}") };
                        Error::Throttled { path, status, reason, retry_after }
                    }
                    other => other,
                });
            }
            retries += 1;
            let wait = wait.min(MAX_RETRY_AFTER);
            tracing::info!(path = %received.path, status = %received.status, ?wait, retries, "throttled; asking again");
            tokio::time::sleep(wait).await;
        }
    }

    /// [`Self::send_into`] into a fresh buffer.
    pub async fn send(&self, build: impl Fn() -> Result<http::Request<Vec<u8>>>) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        self.send_into(build, &mut body, false).await?;
        Ok(body)
    }

    /// The number of throttled answers so far.
    pub fn throttled(&self) -> u32 {
        self.throttled.load(Ordering::Relaxed)
    }
}

/// A response whose body was read: what [`Received::check`] needs to classify its status.
struct Received {
    path: String,
    status: StatusCode,
    retry_after: Option<Duration>,
}

/// Sends `request` and reads the whole response body into `body` (emptied first), whatever
/// its status.
async fn receive_into(client: &kube::Client, request: http::Request<Vec<u8>>, body: &mut Vec<u8>) -> Result<Received> {
    let path = request.uri().path().to_owned();
    let response = client
        .send(request.map(Body::from))
        .await
        .map_err(|source| Error::ClusterRequest { request: format!("GET {path}"), source })?;
    let status = response.status();
    // Whole seconds, as client-go's `retryAfterSeconds` reads it (an HTTP date is ignored).
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
        .map(Duration::from_secs);
    body.clear();
    let mut incoming = response.into_body();
    while let Some(frame) = incoming.frame().await {
        let frame = frame
            .map_err(|source| Error::ClusterRequest { request: format!("GET {path}: reading the response"), source })?;
        if let Some(data) = frame.data_ref() {
            body.extend_from_slice(data);
        }
    }
    Ok(Received { path, status, retry_after })
}

impl Received {
    /// How long the server asked to wait, when it throttled the request: a 429 or a 503 with
    /// `Retry-After` (client-go's `checkWait` needs the header too, and takes any 5xx with one;
    /// kubecensus only the 503 that busy servers send: a 500 or 504 is no throttle).
    fn throttled_for(&self) -> Option<Duration> {
        match self.status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => self.retry_after,
            _ => None,
        }
    }

    /// Ok on a success status; else the error the status means, with the message of the
    /// `Status` object in `body` (or the start of a body that is not one).
    fn check(self, body: &[u8]) -> Result<()> {
        let Self { path, status, retry_after } = self;
        if status.is_success() {
            return Ok(());
        }
        let reason = status_message(body);
        Err(match (status, retry_after) {
            (StatusCode::GONE, _) => Error::Expired { path, reason },
            (StatusCode::NOT_FOUND, _) => {
                Error::NotServed(format!("GET {path}: {status} {reason}").trim_end().to_owned())
            }
            (StatusCode::FORBIDDEN, _) => Error::Forbidden { path, reason },
            (StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE, Some(retry_after)) => {
                Error::Throttled { path, status, reason, retry_after }
            }
            _ => Error::ClusterStatus { path, status, reason },
        })
    }
}

/// The `message` of a Kubernetes `Status` body; else the first line of a text body (APF answers
/// 429 with `http.Error`'s plain text), at most [`QUOTED_BODY_CHARS`] characters.
fn status_message(body: &[u8]) -> String {
    if let Ok(status) = serde_json::from_slice::<Value>(body) {
        return status["message"].as_str().unwrap_or_default().to_owned();
    }
    let text = String::from_utf8_lossy(body);
    text.lines().next().unwrap_or_default().trim().chars().take(QUOTED_BODY_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(status: u16, retry_after: Option<u64>) -> Received {
        Received {
            path: "/api/v1/pods".into(),
            status: StatusCode::from_u16(status).unwrap(),
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn a_429_or_a_503_with_retry_after_is_a_throttle_and_403_keeps_the_servers_message() {
        assert_eq!(received(429, Some(3)).throttled_for(), Some(Duration::from_secs(3)));
        assert_eq!(received(429, None).throttled_for(), None, "client-go waits only with Retry-After");
        assert_eq!(received(503, Some(2)).throttled_for(), Some(Duration::from_secs(2)));
        assert_eq!(received(503, None).throttled_for(), None);
        assert_eq!(received(500, Some(2)).throttled_for(), None);

        let forbidden = br#"{"kind":"Status","message":"pods is forbidden: User \"u\" cannot list resource \"pods\" in API group \"\" at the cluster scope","reason":"Forbidden","code":403}"#;
        let err = received(403, None).check(forbidden).unwrap_err();
        assert!(matches!(err, Error::Forbidden { .. }), "{err:?}");
        assert!(
            err.to_string().contains(r#"cannot list resource "pods" in API group "" at the cluster scope"#),
            "{err}"
        );
        let apf = received(429, Some(1)).check(b"Too many requests, please try again later.\n").unwrap_err();
        assert_eq!(
            apf.to_string(),
            "cluster: GET /api/v1/pods: 429 Too Many Requests Too many requests, please try again later. (retry after 1s)"
        );
    }
}
