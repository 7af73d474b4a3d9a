//! Certificates for one simulated cluster: its own self-signed CA and a server certificate it
//! signs, valid for `127.0.0.1` and `localhost` (Go clients such as kubectl ignore the CN).

use std::sync::Arc;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A cluster's CA (for clients to trust) and the TLS configuration of its API server.
pub struct ClusterTls {
    /// The CA certificate, PEM-encoded.
    pub ca_pem: String,
    /// The server side: certificate chain and key.
    pub server_config: Arc<ServerConfig>,
}

/// Creates a fresh CA named after the cluster and a server certificate signed by it.
pub fn cluster_tls(cluster: &str) -> anyhow::Result<ClusterTls> {
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, format!("{cluster}-ca"));
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let ca_cert = ca_params.self_signed(&ca_key).context("self-signing the CA")?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut server_params = CertificateParams::new(vec!["localhost".to_owned()]).context("server certificate names")?;
    server_params.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
    server_params.distinguished_name.push(DnType::CommonName, format!("{cluster}-apiserver"));
    server_params.use_authority_key_identifier_extension = true;
    server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().context("generating the server key")?;
    let server_cert = server_params.signed_by(&server_key, &issuer).context("signing the server certificate")?;

    let chain: Vec<CertificateDer<'static>> = vec![server_cert.der().clone(), ca_cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let mut server_config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("TLS server certificate")?;
    server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ClusterTls { ca_pem: ca_cert.pem(), server_config: Arc::new(server_config) })
}
