//! Certificates for one simulated cluster: its own self-signed CA and a server certificate it
//! signs, valid for `127.0.0.1` and `localhost` (Go clients such as kubectl ignore the CN).

use std::sync::Arc;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let (builder, client_certificate) = if client_auth {
        let mut roots = RootCertStore::empty();
        roots.add(ca_cert.der().clone()).context("the CA as a client root")?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .context("the client certificate verifier")?;
        let mut client_params = CertificateParams::new(Vec::new()).context("client certificate")?;
        client_params.distinguished_name.push(DnType::CommonName, "kubecensus");
        client_params.distinguished_name.push(DnType::OrganizationName, "system:masters");
        client_params.use_authority_key_identifier_extension = true;
        client_params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().context("generating the client key")?;
        let client_cert = client_params.signed_by(&client_key, &issuer).context("signing the client certificate")?;
        (builder.with_client_cert_verifier(verifier), Some((client_cert.pem(), client_key.serialize_pem())))
    } else {
        (builder.with_no_client_auth(), None)
    };
    let mut server_config = builder.with_single_cert(chain, key).context("TLS server certificate")?;
    server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ClusterTls { ca_pem: ca_cert.pem(), server_config: Arc::new(server_config), client_certificate })
}
