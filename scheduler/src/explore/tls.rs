//! Mutual TLS for the explorer: the server's certificate, and a client certificate required
//! from every peer, signed by the proxy's CA (as Kubernetes' `--requestheader-client-ca-file`).
//! A peer without one fails the handshake, so it never reaches a handler.

use std::{path::Path, sync::Arc};

use anyhow::Context;
use axum_server::tls_rustls::RustlsConfig;
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
};

/// The TLS configuration: serve `cert` (a PEM chain) with `key`, require client certificates
/// signed by `client_ca` (PEM, one or more certificates).
///
/// # Errors
/// A file that cannot be read or holds no certificate or key of a kind rustls takes.
pub fn mutual(client_ca: &Path, cert: &Path, key: &Path) -> anyhow::Result<RustlsConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in certificates(client_ca)? {
        roots.add(ca).with_context(|| format!("--client-ca {}", client_ca.display()))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .context("the client certificate verifier")?;
    let key_pem = pem::parse_many(std::fs::read(key).with_context(|| format!("reading --tls-key {}", key.display()))?)
        .with_context(|| format!("--tls-key {}: not PEM", key.display()))?;
    let key = key_pem
        .into_iter()
        .find_map(|block| match block.tag() {
            "PRIVATE KEY" => Some(PrivateKeyDer::Pkcs8(block.into_contents().into())),
            "RSA PRIVATE KEY" => Some(PrivateKeyDer::Pkcs1(block.into_contents().into())),
            "EC PRIVATE KEY" => Some(PrivateKeyDer::Sec1(block.into_contents().into())),
            _ => None,
        })
        .with_context(|| format!("--tls-key {}: no private key", key.display()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certificates(cert)?, key)
        .context("the server certificate and key")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(RustlsConfig::from_config(Arc::new(config)))
}

/// The certificates of a PEM file.
fn certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let certificates: Vec<CertificateDer<'static>> = pem::parse_many(text)
        .with_context(|| format!("{}: not PEM", path.display()))?
        .into_iter()
        .filter(|block| block.tag() == "CERTIFICATE")
        .map(|block| CertificateDer::from(block.into_contents()))
        .collect();
    anyhow::ensure!(!certificates.is_empty(), "{}: no certificate", path.display());
    Ok(certificates)
}
