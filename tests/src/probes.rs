//! The admin endpoint as Kubernetes's probes and Prometheus see it: a GET of a path, waiting for
//! a status, and `/metrics` read as Prometheus text by the `prometheus-parse` crate, a reader
//! other than the writer; and GETs over HTTPS with or without a client certificate
//! ([`get_tls`], as an authenticating proxy in front of the explorer makes them).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
};
use prometheus_parse::{LineInfo, Sample, Scrape, Value};
use rcgen::Certificate;
use rustls::{
    ClientConfig, RootCertStore, SupportedProtocolVersion,
    pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName},
};
use tokio_rustls::TlsConnector;

use crate::certs::Issued;

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
    let request = request(&format!("http://{addr}{path}"), headers)?;
    let response = tokio::time::timeout(GET_TIMEOUT, client.request(request)).await.context("GET timed out")??;
    answer(response).await
}

/// A TLS client that trusts only `server_ca` and presents `identity` (a client certificate and
/// its key) when the server asks for one; speaks the protocol `versions`
/// ([`rustls::DEFAULT_VERSIONS`]: TLS 1.3 and 1.2) with ring's algorithms.
///
/// # Errors
/// A CA certificate or a key rustls does not take, or no version.
pub fn tls_client(
    server_ca: &Certificate,
    identity: Option<&Issued>,
    versions: &[&'static SupportedProtocolVersion],
) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots.add(server_ca.der().clone()).context("the server CA as a root")?;
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .context("TLS protocol versions")?
        .with_root_certificates(roots);
    let config = match identity {
        Some(issued) => builder
            .with_client_auth_cert(
                vec![issued.certificate.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.key.serialize_der())),
            )
            .context("the client certificate")?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// GETs `path` over HTTPS (HTTP/1.1, one connection) on `addr` with request `headers`, as the
/// client `tls` ([`tls_client`]); the server's certificate must name `addr`'s IP address.
///
/// # Errors
/// No connection, a failed TLS handshake, or a connection closed before an answer: with TLS 1.3
/// a server refusing the client's certificate says so (an alert) only after the client's side of
/// the handshake is done, so that refusal can show as the request's error. Each error's chain
/// says which step failed.
pub async fn get_tls(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    tls: &Arc<ClientConfig>,
) -> anyhow::Result<Answer> {
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        let stream = TlsConnector::from(tls.clone())
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await
            .context("the TLS handshake")?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await?;
        let mut connection = tokio::spawn(connection);
        let host = addr.to_string();
        let request = request(path, &[headers, &[("Host", host.as_str())]].concat())?;
        let cause = tokio::select! {
            biased;
            sent = sender.send_request(request) => match sent {
                Ok(response) => return answer(response).await,
                // Why the connection ended (a TLS alert, say) is its error, not the request's;
                // without a sender it ends at once if it has not already.
                Err(err) => {
                    drop(sender);
                    why_closed(connection.await, err.into())
                }
            },
            // A request sent as the connection ends can stay queued, never answered nor
            // failed (hyper 1.12), so the connection's end is watched too.
            closed = &mut connection => why_closed(closed, anyhow::anyhow!("the connection closed")),
        };
        Err(cause.context("no HTTP answer"))
    };
    tokio::time::timeout(GET_TIMEOUT, exchange).await.context("GET timed out")?
}

/// Why a client connection's task ended: its error, or `otherwise` when it ended without one.
fn why_closed(ended: Result<hyper::Result<()>, tokio::task::JoinError>, otherwise: anyhow::Error) -> anyhow::Error {
    match ended {
        Ok(Err(err)) => err.into(),
        Ok(Ok(())) => otherwise,
        Err(join) => join.into(),
    }
}

/// A GET of `uri` with `headers` (name, value).
fn request(uri: &str, headers: &[(&str, &str)]) -> anyhow::Result<axum::http::Request<Empty<Bytes>>> {
    let mut request = axum::http::Request::get(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Ok(request.body(Empty::new())?)
}

/// The status and the whole body (as text) of `response`.
async fn answer(response: axum::http::Response<hyper::body::Incoming>) -> anyhow::Result<Answer> {
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
