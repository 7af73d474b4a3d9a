//! The admin endpoint as Kubernetes's probes and Prometheus see it: a GET of a path, waiting for
//! a status, and `/metrics` read as Prometheus text by the `prometheus-parse` crate, a reader
//! other than the writer.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use prometheus_parse::{LineInfo, Sample, Scrape, Value};

/// How long one GET may take.
const GET_TIMEOUT: Duration = Duration::from_secs(10);

/// What a GET was answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// GETs `path` on `addr`.
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Answer> {
    get_with(addr, path, &[]).await
}

/// GETs `path` on `addr` with request `headers` (name, value).
pub async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<Answer> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut request = axum::http::Request::get(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Empty::new())?;
    let response = tokio::time::timeout(GET_TIMEOUT, client.request(request)).await.context("GET timed out")??;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Answer { status, body: String::from_utf8_lossy(&body).into_owned() })
}

/// GETs `path` until it answers `status`, and returns that answer; fails after `timeout` with
/// the last answer.
pub async fn wait_for(addr: SocketAddr, path: &str, status: u16, timeout: Duration) -> anyhow::Result<Answer> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let answer = get(addr, path).await;
        if let Ok(answer) = &answer
            && answer.status == status
        {
            return Ok(answer.clone());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{path} on {addr} did not answer {status} within {timeout:?}; last: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One scrape of `/metrics`.
#[derive(Debug)]
pub struct Metrics {
    samples: Vec<Sample>,
}

/// Scrapes `/metrics` on `addr`.
pub async fn scrape(addr: SocketAddr) -> anyhow::Result<Metrics> {
    let answer = get(addr, "/metrics").await?;
    anyhow::ensure!(answer.status == 200, "/metrics answered {}: {}", answer.status, answer.body);
    Metrics::parse(&answer.body)
}

impl Metrics {
    /// Reads Prometheus text; fails on a line that is not a sample, a `# HELP` or `# TYPE` line,
    /// or empty.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        if let Some(line) = text.lines().find(|line| LineInfo::parse(line) == LineInfo::Ignored) {
            anyhow::bail!("not Prometheus text: `{line}` in\n{text}");
        }
        let scrape = Scrape::parse(text.lines().map(|line| Ok(line.to_owned())))?;
        Ok(Self { samples: scrape.samples })
    }

    /// The value of the sample `name` (a counter, a gauge, or a histogram's `_count` or `_sum`)
    /// with exactly `labels`; `None` when there is none.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let sample = self.samples.iter().find(|sample| {
            sample.metric == name
                && sample.labels.len() == labels.len()
                && labels.iter().all(|(key, value)| sample.labels.get(key) == Some(*value))
        })?;
        match sample.value {
            Value::Counter(value) | Value::Gauge(value) | Value::Untyped(value) => Some(value),
            Value::Histogram(_) | Value::Summary(_) => None,
        }
    }

    /// [`Self::value`], or 0 when there is none (a counter not yet incremented).
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }
}
