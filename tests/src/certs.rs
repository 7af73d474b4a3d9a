//! Certificates the tests make: a self-signed CA, and server or client certificates it signs,
//! valid for `127.0.0.1` and `localhost`.

use anyhow::Context;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A certificate authority of a test's own.
pub struct TestCa {
    /// The CA certificate (to be trusted).
    pub certificate: Certificate,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate a [`TestCa`] signed, and its key.
pub struct Issued {
    pub certificate: Certificate,
    pub key: KeyPair,
}

impl TestCa {
    /// A fresh self-signed CA whose common name is `name`.
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().context("generating the CA key")?;
        let certificate = params.self_signed(&key).context("self-signing the CA")?;
        Ok(Self { certificate, issuer: Issuer::new(params, key) })
    }

    /// A certificate for `127.0.0.1` and `localhost` named `name`, for a server (`ServerAuth`)
    /// or a client (`ClientAuth`).
    pub fn issue(&self, name: &str, purpose: ExtendedKeyUsagePurpose) -> anyhow::Result<Issued> {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).context("certificate names")?;
        params.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.distinguished_name.push(DnType::CommonName, name);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().context("generating a key")?;
        let certificate = params.signed_by(&key, &self.issuer).with_context(|| format!("signing {name}"))?;
        Ok(Issued { certificate, key })
    }

    /// Writes the CA certificate to `path` (PEM).
    pub fn write(&self, path: &std::path::Path) -> anyhow::Result<()> {
        std::fs::write(path, self.certificate.pem()).with_context(|| format!("writing {}", path.display()))
    }
}

impl Issued {
    /// Writes the certificate and the key (PEM) to `cert` and `key`.
    pub fn write(&self, cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<()> {
        std::fs::write(cert, self.certificate.pem()).with_context(|| format!("writing {}", cert.display()))?;
        std::fs::write(key, self.key.serialize_pem()).with_context(|| format!("writing {}", key.display()))
    }
}
