use clap::Parser;

use super::*;

/// The NATS flags alone, as a binary's command line has them.
#[derive(Debug, clap::Parser)]
struct Cli {
    #[command(flatten)]
    nats: NatsCredentials,
}

fn temp_file(name: &str, content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kubecensus-credentials-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

#[test]
fn a_secret_file_loses_its_trailing_newline_and_an_empty_or_missing_one_is_named() {
    let path = temp_file("password", "s3cret\r\n");
    assert_eq!(read_secret(&path, "--x").unwrap().expose_secret(), "s3cret");
    let empty = temp_file("empty", "\n");
    assert_eq!(read_secret(&empty, "--x").unwrap_err(), format!("--x {}: the file is empty", empty.display()));
    let missing = empty.with_file_name("missing");
    assert!(
        read_secret(&missing, "--x").unwrap_err().starts_with(&format!("--x {}: cannot be read", missing.display()))
    );
}

#[test]
fn two_nats_authentication_methods_are_refused_and_a_user_needs_a_password_file() {
    let check_with = |url: &str, args: &[&str]| {
        let cli = Cli::try_parse_from([&["x"], args].concat()).unwrap();
        let servers = NatsServers::parse(url).unwrap();
        cli.nats.connect_options(&servers).map(|_| cli.nats.method(&servers)).map_err(|err| err.to_string())
    };
    let check = |args: &[&str]| check_with("nats://h", args);
    assert_eq!(
        check(&["--nats-token-file", "/t", "--nats-nkey-file", "/n"]).unwrap_err(),
        "queue: give one NATS authentication method, not --nats-token-file and --nats-nkey-file \
         (flags or their KUBECENSUS_NATS_* variables)"
    );
    assert_eq!(
        check(&["--nats-user", "kc"]).unwrap_err(),
        "queue: --nats-user and --nats-password-file go together: give both or neither"
    );
    assert_eq!(
        check(&["--nats-tls-key-file", "/k"]).unwrap_err(),
        "queue: --nats-tls-cert-file and --nats-tls-key-file go together: give both or neither"
    );
    let password = temp_file("password", "pw\n");
    assert_eq!(
        check(&["--nats-user", "kc", "--nats-password-file", password.to_str().unwrap()]),
        Ok(Some("user and password"))
    );
    assert_eq!(check(&[]), Ok(None));
    // Credentials in the URL are a method too: never "none" when they were given.
    assert_eq!(check_with("nats://kc:pw@h", &[]), Ok(Some("user and password in NATS_URL")));
    assert_eq!(check_with("nats://t0ken@h", &[]), Ok(Some("token in NATS_URL")));
    assert_eq!(
        check_with("nats://kc:pw@h", &["--nats-token-file", "/t"]).unwrap_err(),
        "queue: NATS_URL carries credentials (user and password in NATS_URL) and --nats-token-file is given too: \
         give them once, in the URL or with the flag"
    );
}

#[test]
fn a_bad_nkey_seed_or_creds_file_is_named_and_its_content_never_shown() {
    let seed = temp_file("seed", "SUNOTASEEDATALLsecretvalue\n");
    let servers = NatsServers::parse("nats://h").unwrap();
    let nats = NatsCredentials { nats_nkey_file: Some(seed.clone()), ..Default::default() };
    let err = nats.connect_options(&servers).unwrap_err().to_string();
    assert!(err.contains(&seed.display().to_string()) && err.contains("not an NKey user seed"), "{err}");
    assert!(!err.contains("secretvalue"), "{err}");

    let creds = temp_file("user.creds", "secretvalue\n");
    let nats = NatsCredentials { nats_creds_file: Some(creds.clone()), ..Default::default() };
    let err = nats.connect_options(&servers).unwrap_err().to_string();
    assert!(err.contains(&creds.display().to_string()) && err.contains("not a NATS credentials file"), "{err}");
    assert!(!err.contains("secretvalue"), "{err}");
}

#[test]
fn a_ca_file_without_a_certificate_and_an_unreadable_sslrootcert_are_named() {
    let ca = temp_file("ca.pem", "not PEM\n");
    let nats = NatsCredentials { nats_ca_file: Some(ca.clone()), ..Default::default() };
    let err = nats.connect_options(&NatsServers::parse("nats://h").unwrap()).unwrap_err().to_string();
    assert_eq!(err, format!("queue: --nats-ca-file {}: no PEM CERTIFICATE in it", ca.display()));

    let url = "postgres://kc:hunter2@db:5432/kc?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem";
    let err = DatabaseCredentials::default().connect_options(url).unwrap_err().to_string();
    assert!(
        err.starts_with("database: sslrootcert (or PGSSLROOTCERT) names /nonexistent/ca.pem, which cannot"),
        "{err}"
    );
    let err = DatabaseCredentials::default().connect_options("postgres://kc:hunter2@db:notaport/kc").unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[test]
fn a_urls_user_and_password_are_replaced() {
    assert_eq!(without_credentials("nats://user:s3cret@host:4222"), "nats://***@host:4222");
    assert_eq!(
        without_credentials("postgres://kc:hunter2@db/kc?sslmode=verify-full"),
        "postgres://***@db/kc?sslmode=verify-full"
    );
    assert_eq!(without_credentials("nats://host:4222"), "nats://host:4222");
    assert_eq!(without_credentials("nats://a:b@h1,c:d@h2:4222"), "nats://***@h1,***@h2:4222");
    assert_eq!(without_credentials("postgres://kc:pa/ss@db/kc"), "postgres://***@db/kc");
}
