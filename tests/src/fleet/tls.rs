//! Certificates for one simulated cluster: its own self-signed CA and a server certificate it
//! signs, valid for `127.0.0.1` and `localhost` (Go clients such as kubectl ignore the CN).

use std::sync::Arc;

use anyhow::Context;
use rcgen::ExtendedKeyUsagePurpose;
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::certs::TestCa;

/// A cluster's CA (for clients to trust) and the TLS configuration of its API server.
pub struct ClusterTls {
    /// The CA certificate, PEM-encoded.
    pub ca_pem: String,
    /// The server side: certificate chain and key.
    pub server_config: Arc<ServerConfig>,
}

/// Creates a fresh CA named after the cluster and a server certificate signed by it.
pub fn cluster_tls(cluster: &str) -> anyhow::Result<ClusterTls> {
    let ca = TestCa::new(&format!("{cluster}-ca"))?;
    let server = ca.issue(&format!("{cluster}-apiserver"), ExtendedKeyUsagePurpose::ServerAuth)?;
    let chain: Vec<CertificateDer<'static>> = vec![server.certificate.der().clone(), ca.certificate.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.key.serialize_der()));
    let mut server_config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("TLS server certificate")?;
    server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ClusterTls { ca_pem: ca.certificate.pem(), server_config: Arc::new(server_config) })
}
