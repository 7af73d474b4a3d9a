//! TLS and credentials for PostgreSQL and NATS. Every secret comes from a file (a mounted
//! Kubernetes Secret) or an environment variable, never from the command line, where any user
//! of the machine can read it in the process list; and no error or log line ever shows one.
//!
//! PostgreSQL takes libpq's settings: `sslmode`, `sslrootcert`, `sslcert` and `sslkey` in the
//! URL or as `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`, and `PGPASSWORD`
//! (<https://www.postgresql.org/docs/current/libpq-envars.html>, read by sqlx's
//! `PgConnectOptions`); `--database-password-file` adds a password file. NATS takes one of four
//! authentication methods (<https://docs.nats.io/using-nats/developer/connecting>) and TLS.

use std::{
    path::{Path, PathBuf},
    str::FromStr,
};

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgConnectOptions;

use crate::{Error, Result};

/// The PostgreSQL password file, besides the URL's settings.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DatabaseCredentials {
    /// A file holding the PostgreSQL password (a trailing newline is ignored). It wins over the
    /// URL's password and PGPASSWORD.
    #[arg(long, global = true, env = "KUBECENSUS_DATABASE_PASSWORD_FILE", value_name = "FILE")]
    pub database_password_file: Option<PathBuf>,
}

/// The files libpq's TLS settings may name: the URL parameter and its environment variable.
const TLS_FILES: [(&str, &str); 3] =
    [("sslrootcert", "PGSSLROOTCERT"), ("sslcert", "PGSSLCERT"), ("sslkey", "PGSSLKEY")];

impl DatabaseCredentials {
    /// The connection options of `url` with the password file's password, after checking that
    /// every TLS file named (in the URL or the environment) can be read.
    ///
    /// # Errors
    /// [`Error::Settings`] naming the setting and file at fault; never the password.
    pub fn connect_options(&self, url: &str) -> Result<PgConnectOptions> {
        let shown = without_credentials(url);
        let mut options = PgConnectOptions::from_str(url)
            .map_err(|err| Error::database_setting(format!("DATABASE_URL {shown} is not a PostgreSQL URL: {err}")))?;
        for (parameter, variable) in TLS_FILES {
            if let Some(path) = url_parameter(url, parameter).or_else(|| std::env::var(variable).ok()) {
                std::fs::metadata(&path).and_then(|_| std::fs::File::open(&path)).map_err(|err| {
                    Error::database_setting(format!(
                        "{parameter} (or {variable}) names {path}, which cannot be read: {err}"
                    ))
                })?;
            }
        }
        if let Some(path) = &self.database_password_file {
            let password = read_secret(path, "--database-password-file").map_err(Error::database_setting)?;
            options = options.password(password.expose_secret());
        }
        Ok(options)
    }
}

/// A query parameter of a URL, percent-decoded.
fn url_parameter(url: &str, name: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    parsed.query_pairs().find(|(key, _)| key == name).map(|(_, value)| value.into_owned())
}

/// How kubecensus authenticates to NATS and checks its certificate. At most one authentication
/// method; every secret is in a file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NatsCredentials {
    /// A NATS credentials file (`.creds`: a user JWT and its NKey seed, as `nsc` writes it).
    #[arg(long, global = true, env = "KUBECENSUS_NATS_CREDS_FILE", value_name = "FILE")]
    pub nats_creds_file: Option<PathBuf>,
    /// A NATS user name; its password is in --nats-password-file.
    #[arg(long, global = true, env = "KUBECENSUS_NATS_USER")]
    pub nats_user: Option<String>,
    /// A file holding the password of --nats-user.
    #[arg(long, global = true, env = "KUBECENSUS_NATS_PASSWORD_FILE", value_name = "FILE")]
    pub nats_password_file: Option<PathBuf>,
    /// A file holding a NATS token.
    #[arg(long, global = true, env = "KUBECENSUS_NATS_TOKEN_FILE", value_name = "FILE")]
    pub nats_token_file: Option<PathBuf>,
    /// A file holding an NKey user seed (`SU...`).
    #[arg(long, global = true, env = "KUBECENSUS_NATS_NKEY_FILE", value_name = "FILE")]
    pub nats_nkey_file: Option<PathBuf>,
    /// A PEM file of the CA certificates that sign the NATS server's; TLS is then required.
    #[arg(long, global = true, env = "KUBECENSUS_NATS_CA_FILE", value_name = "FILE")]
    pub nats_ca_file: Option<PathBuf>,
    /// A PEM client certificate for NATS (mutual TLS), with --nats-tls-key-file.
    #[arg(long, global = true, env = "KUBECENSUS_NATS_TLS_CERT_FILE", value_name = "FILE")]
    pub nats_tls_cert_file: Option<PathBuf>,
    /// The PEM private key of --nats-tls-cert-file.
    #[arg(long, global = true, env = "KUBECENSUS_NATS_TLS_KEY_FILE", value_name = "FILE")]
    pub nats_tls_key_file: Option<PathBuf>,
}

impl NatsCredentials {
    /// The authentication method chosen, for messages: `creds file`, `user and password`,
    /// `token`, `NKey`, or `none`.
    pub fn method(&self) -> &'static str {
        self.methods().first().map_or("none", |(method, _)| method)
    }

    /// The authentication methods given, each with its flag.
    fn methods(&self) -> Vec<(&'static str, &'static str)> {
        [
            (self.nats_creds_file.is_some(), "creds file", "--nats-creds-file"),
            (self.nats_user.is_some(), "user and password", "--nats-user"),
            (self.nats_token_file.is_some(), "token", "--nats-token-file"),
            (self.nats_nkey_file.is_some(), "NKey", "--nats-nkey-file"),
        ]
        .into_iter()
        .filter_map(|(given, method, flag)| given.then_some((method, flag)))
        .collect()
    }

    /// Checks that at most one method is given and that paired flags come together. (Checked
    /// here, not by clap: clap does not validate global arguments.)
    fn check(&self) -> Result<()> {
        let methods = self.methods();
        if methods.len() > 1 {
            let flags: Vec<&str> = methods.iter().map(|(_, flag)| *flag).collect();
            return Err(Error::nats_setting(format!(
                "give one NATS authentication method, not {} (flags or their KUBECENSUS_NATS_* variables)",
                flags.join(" and ")
            )));
        }
        let pairs = [
            (self.nats_user.is_some(), self.nats_password_file.is_some(), "--nats-user", "--nats-password-file"),
            (
                self.nats_tls_cert_file.is_some(),
                self.nats_tls_key_file.is_some(),
                "--nats-tls-cert-file",
                "--nats-tls-key-file",
            ),
        ];
        for (first, second, first_flag, second_flag) in pairs {
            if first != second {
                return Err(Error::nats_setting(format!(
                    "{first_flag} and {second_flag} go together: give both or neither"
                )));
            }
        }
        Ok(())
    }

    /// NATS connection options carrying these credentials and TLS settings. The files are read
    /// now, so a missing or malformed one fails at start-up, by name.
    ///
    /// # Errors
    /// [`Error::Settings`] naming the flag and file at fault; never a secret.
    pub fn connect_options(&self) -> Result<async_nats::ConnectOptions> {
        self.check()?;
        let mut options = async_nats::ConnectOptions::new();
        if let Some(path) = &self.nats_creds_file {
            let creds = read_secret(path, "--nats-creds-file").map_err(Error::nats_setting)?;
            // async-nats's parser wants the newline that ends the seed's closing line.
            options = options.credentials(&format!("{}\n", creds.expose_secret())).map_err(|err| {
                Error::nats_setting(format!("--nats-creds-file {}: not a NATS credentials file: {err}", path.display()))
            })?;
        }
        if let (Some(user), Some(path)) = (&self.nats_user, &self.nats_password_file) {
            let password = read_secret(path, "--nats-password-file").map_err(Error::nats_setting)?;
            options = options.user_and_password(user.clone(), password.expose_secret().to_owned());
        }
        if let Some(path) = &self.nats_token_file {
            let token = read_secret(path, "--nats-token-file").map_err(Error::nats_setting)?;
            options = options.token(token.expose_secret().to_owned());
        }
        if let Some(path) = &self.nats_nkey_file {
            let seed = read_secret(path, "--nats-nkey-file").map_err(Error::nats_setting)?;
            // The seed is checked here: async-nats would only find out at the first connection.
            if !seed.expose_secret().starts_with("SU") || nkeys::KeyPair::from_seed(seed.expose_secret()).is_err() {
                return Err(Error::nats_setting(format!(
                    "--nats-nkey-file {}: not an NKey user seed (one line starting with SU)",
                    path.display()
                )));
            }
            options = options.nkey(seed.expose_secret().to_owned());
        }
        if let Some(path) = &self.nats_ca_file {
            check_pem(path, "--nats-ca-file", "CERTIFICATE")?;
            options = options.add_root_certificates(path.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&self.nats_tls_cert_file, &self.nats_tls_key_file) {
            check_pem(cert, "--nats-tls-cert-file", "CERTIFICATE")?;
            check_pem(key, "--nats-tls-key-file", "PRIVATE KEY")?;
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(options)
    }
}

/// Checks that `path` is a readable PEM file holding a block whose label ends in `label`.
fn check_pem(path: &Path, flag: &str, label: &str) -> Result<()> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| Error::nats_setting(format!("{flag} {}: cannot be read: {err}", path.display())))?;
    let found = pem::parse_many(text.as_bytes()).is_ok_and(|blocks| blocks.iter().any(|b| b.tag().ends_with(label)));
    if found { Ok(()) } else { Err(Error::nats_setting(format!("{flag} {}: no PEM {label} in it", path.display()))) }
}

/// The content of a secret file without its trailing newline (what `echo` or `kubectl create
/// secret --from-file` leave). The error names the flag and file, never the content.
pub fn read_secret(path: &Path, flag: &str) -> std::result::Result<SecretString, String> {
    let text =
        std::fs::read_to_string(path).map_err(|err| format!("{flag} {}: cannot be read: {err}", path.display()))?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(format!("{flag} {}: the file is empty", path.display()));
    }
    Ok(SecretString::from(secret.to_owned()))
}

/// A URL with any `user:password@` replaced, fit for logs and errors.
pub fn without_credentials(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => format!("{}***{}", &url[..scheme_end + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests;
