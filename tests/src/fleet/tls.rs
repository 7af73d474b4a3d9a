//! Certificates for one simulated cluster: its own self-signed CA and a server certificate it
//! signs, valid for `127.0.0.1` and `localhost` (Go clients such as kubectl ignore the CN).

use std::sync::Arc;

use anyhow::Context;
use rcgen::ExtendedKeyUsagePurpose;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::certs::TestCa;

/// A cluster's CA (for clients to trust) and the TLS configuration of its API server.
pub struct ClusterTls {
    /// The CA certificate, PEM-encoded.
    pub ca_pem: String,
    /// The server side: certificate chain and key.
    pub server_config: Arc<ServerConfig>,
    /// With `client_auth`: a client certificate the server accepts and its key, both PEM.
    pub client_certificate: Option<(String, String)>,
}

/// Creates a fresh CA named after the cluster and a server certificate signed by it. With
/// `client_auth`, the server requires a client certificate signed by the same CA (as an API
/// server's `--client-ca-file`), and one is made for the clients.
pub fn cluster_tls(cluster: &str, client_auth: bool) -> anyhow::Result<ClusterTls> {
    let ca = TestCa::new(&format!("{cluster}-ca"))?;
    let server = ca.issue(&format!("{cluster}-apiserver"), ExtendedKeyUsagePurpose::ServerAuth)?;
    let chain: Vec<CertificateDer<'static>> = vec![server.certificate.der().clone(), ca.certificate.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let (builder, client_certificate) = if client_auth {
        let mut roots = RootCertStore::empty();
        roots.add(ca.certificate.der().clone()).context("the CA as a client root")?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .context("the client certificate verifier")?;
        let client = ca.issue("kubecensus", ExtendedKeyUsagePurpose::ClientAuth)?;
        (builder.with_client_cert_verifier(verifier), Some((client.certificate.pem(), client.key.serialize_pem())))
    } else {
        (builder.with_no_client_auth(), None)
    };
    let mut server_config = builder.with_single_cert(chain, key).context("TLS server certificate")?;
    server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ClusterTls { ca_pem: ca.certificate.pem(), server_config: Arc::new(server_config), client_certificate })
}
