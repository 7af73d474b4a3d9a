//! TLS and credentials for the services: a private PostgreSQL with `ssl = on` and password
//! authentication, private nats-servers with TLS and each authentication method, all with
//! certificates the tests make; then one real job through both.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use kubecensus::{
    ops::credentials::{DatabaseCredentials, NatsCredentials},
    queue::Queue,
    store,
};
use kubecensus_tests::{
    certs::TestCa,
    checks::assert_same_pods,
    fleet::{Fleet, FleetSpec},
    harness::{TestEnv, binary, connect_nats as connect},
    nats_jwt::NatsAccounts,
    servers::{TempNats, TempPostgres},
};
use rcgen::ExtendedKeyUsagePurpose;
use sqlx::{Connection, PgConnection};

/// A fresh folder for one test's files.
fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kubecensus-credentials-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `content` to `dir/name`; returns the path.
fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

/// A private PostgreSQL over TLS signed by `ca`, with a login role `kubecensus` whose password is
/// `password`, owning the database `database` (made when not `postgres`).
async fn tls_postgres(ca: &TestCa, password: &str, database: &str) -> TempPostgres {
    let postgres = TempPostgres::start_tls(ca).await.unwrap();
    let mut admin = PgConnection::connect(&postgres.url("postgres")).await.unwrap();
    let create = format!("CREATE ROLE kubecensus LOGIN PASSWORD '{password}'");
    sqlx::raw_sql(&create).execute(&mut admin).await.unwrap();
    if database != "postgres" {
        sqlx::raw_sql(&format!("CREATE DATABASE {database} OWNER kubecensus")).execute(&mut admin).await.unwrap();
    }
    postgres
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_verified_tls_takes_a_password_file_and_refuses_a_wrong_ca_or_password() {
    let dir = temp_dir();
    let ca = TestCa::new("postgres-ca").unwrap();
    ca.write(&dir.join("ca.pem")).unwrap();
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let postgres = tls_postgres(&ca, &password, "postgres").await;
    let url = |ca_file: &str| {
        format!(
            "postgres://kubecensus:hunter2-wrong@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={}",
            postgres.port,
            dir.join(ca_file).display()
        )
    };
    let password_file =
        DatabaseCredentials { database_password_file: Some(write(&dir, "password", &format!("{password}\n"))) };

    // The file's password wins over the URL's; the connection is TLS, verified against our CA.
    let pool = store::connect(&url("ca.pem"), &password_file, 2).await.unwrap();
    let (user, ssl): (String, bool) =
        sqlx::query_as("SELECT current_user::text, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((user.as_str(), ssl), ("kubecensus", true));
    pool.close().await;

    // A CA that did not sign the server's certificate: refused, the URL shown without password.
    TestCa::new("other-ca").unwrap().write(&dir.join("other-ca.pem")).unwrap();
    let err = store::connect(&url("other-ca.pem"), &password_file, 1).await.unwrap_err().to_string();
    assert!(err.contains("cannot connect to PostgreSQL at postgres://***@127.0.0.1"), "{err}");
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(!err.contains("hunter2") && !err.contains(&password), "{err}");

    // A wrong password (the URL's, no file): refused by the server, never shown.
    let err = store::connect(&url("ca.pem"), &DatabaseCredentials::default(), 1).await.unwrap_err().to_string();
    assert!(err.contains("password authentication failed for user \"kubecensus\""), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

/// One NATS authentication method: the server's setting, the good and a bad client.
struct Method {
    name: &'static str,
    server: String,
    good: NatsCredentials,
    bad: NatsCredentials,
    /// Secrets that no error may show.
    secrets: Vec<String>,
}

fn methods(dir: &Path) -> Vec<Method> {
    let file = |name: &str, content: &str| Some(write(dir, name, &format!("{content}\n")));
    let user_keys = nkeys::KeyPair::new_user();
    let other_keys = nkeys::KeyPair::new_user();
    let accounts = NatsAccounts::new();
    let strangers = NatsAccounts::new();
    let (seed, other_seed) = (user_keys.seed().unwrap(), other_keys.seed().unwrap());
    let (creds, other_creds) = (accounts.user_creds().unwrap(), strangers.user_creds().unwrap());
    vec![
        Method {
            name: "user and password",
            server: "authorization { user: kc, password: \"s3cret-pw\" }".into(),
            good: NatsCredentials {
                nats_user: Some("kc".into()),
                nats_password_file: file("password", "s3cret-pw"),
                ..Default::default()
            },
            bad: NatsCredentials {
                nats_user: Some("kc".into()),
                nats_password_file: file("wrong-password", "wrong-pw"),
                ..Default::default()
            },
            secrets: vec!["s3cret-pw".into(), "wrong-pw".into()],
        },
        Method {
            name: "token",
            server: "authorization { token: \"s3cret-token\" }".into(),
            good: NatsCredentials { nats_token_file: file("token", "s3cret-token"), ..Default::default() },
            bad: NatsCredentials { nats_token_file: file("wrong-token", "wrong-token"), ..Default::default() },
            secrets: vec!["s3cret-token".into(), "wrong-token".into()],
        },
        Method {
            name: "NKey",
            server: format!("authorization {{ users = [ {{ nkey: {} }} ] }}", user_keys.public_key()),
            good: NatsCredentials { nats_nkey_file: file("seed", &seed), ..Default::default() },
            bad: NatsCredentials { nats_nkey_file: file("other-seed", &other_seed), ..Default::default() },
            secrets: vec![seed.clone(), other_seed.clone()],
        },
        Method {
            name: "creds file",
            server: accounts.server_config().unwrap(),
            good: NatsCredentials { nats_creds_file: file("user.creds", &creds), ..Default::default() },
            bad: NatsCredentials { nats_creds_file: file("stranger.creds", &other_creds), ..Default::default() },
            secrets: vec![creds, other_creds],
        },
    ]
}

/// `credentials` with TLS verified against the CA at `ca_file`.
fn with_ca(credentials: &NatsCredentials, ca_file: &Path) -> NatsCredentials {
    NatsCredentials { nats_ca_file: Some(ca_file.to_owned()), ..credentials.clone() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_over_tls_takes_each_authentication_method_and_refuses_wrong_credentials_or_ca() {
    let dir = temp_dir();
    let ca = TestCa::new("nats-ca").unwrap();
    let ca_file = dir.join("ca.pem");
    ca.write(&ca_file).unwrap();
    TestCa::new("other-ca").unwrap().write(&dir.join("other-ca.pem")).unwrap();
    for method in methods(&dir) {
        let nats = TempNats::start_tls(&ca, false, &method.server).await.unwrap();
        let url = format!("tls://127.0.0.1:{}", nats.port);

        let client = connect(&url, &with_ca(&method.good, &ca_file))
            .await
            .unwrap_or_else(|err| panic!("{}: {err}\n{}", method.name, nats.log()));
        let queue = Queue { stream: "KC_TLS".into(), subject_prefix: "kctls".into(), replicas: 1 };
        queue.ensure_stream(&async_nats::jetstream::new(client)).await.unwrap();

        let refused = connect(&url, &with_ca(&method.bad, &ca_file)).await.unwrap_err();
        let expected = format!("queue: NATS at {url} refused the credentials ({}): ", method.name);
        assert!(refused.starts_with(&expected), "{}: {refused}", method.name);
        let wrong_ca = connect(&url, &with_ca(&method.good, &dir.join("other-ca.pem"))).await.unwrap_err();
        assert!(wrong_ca.starts_with(&format!("queue: cannot connect to NATS at {url}: ")), "{wrong_ca}");
        assert!(wrong_ca.contains("UnknownIssuer"), "{}: {wrong_ca}", method.name);
        for secret in &method.secrets {
            for line in secret.lines().filter(|line| line.len() > 20 || line.contains("pw") || line.contains("token")) {
                assert!(!refused.contains(line) && !wrong_ca.contains(line), "{}: a secret in {refused}", method.name);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_through_tls_postgres_and_mutual_tls_nats_with_a_creds_file() {
    // PostgreSQL over TLS, password-authenticated; NATS over mutual TLS with a creds file.
    let ca = TestCa::new("services-ca").unwrap();
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let postgres = TempPostgres::start_tls(&ca).await.unwrap();
    let accounts = NatsAccounts::new();
    let nats = TempNats::start_tls(&ca, true, &accounts.server_config().unwrap()).await.unwrap();
    let mut env = TestEnv::on(postgres.url("postgres"), nats.url()).await.unwrap();
    let role = format!("CREATE ROLE kubecensus LOGIN PASSWORD '{password}'");
    sqlx::raw_sql(&role).execute(&env.pool).await.unwrap();
    let owner = format!("ALTER DATABASE {} OWNER TO kubecensus", env.services.database);
    sqlx::raw_sql(&owner).execute(&env.pool).await.unwrap();
    let dir = env.dir.clone();
    ca.write(&dir.join("ca.pem")).unwrap();
    ca.issue("kubecensus", ExtendedKeyUsagePurpose::ClientAuth)
        .unwrap()
        .write(&dir.join("client.pem"), &dir.join("client.key"))
        .unwrap();
    let creds = accounts.user_creds().unwrap();
    write(&dir, "user.creds", &creds);
    write(&dir, "db-password", &format!("{password}\n"));

    let fleet = Fleet::start(FleetSpec { clusters: 1, pods: 30, ..FleetSpec::default() }, &dir).await.unwrap();
    let registry = dir.join("clusters.yaml");
    let database_url = format!("postgres://kubecensus@127.0.0.1:{}/{}", postgres.port, env.services.database);
    let services = env.services.clone();
    let command = |program: &str, url: &str| {
        let mut command = Command::new(binary(program));
        services.configure(&mut command, url, &registry);
        command
            .env("NATS_URL", format!("tls://127.0.0.1:{}", nats.port))
            .env("KUBECENSUS_NATS_CREDS_FILE", dir.join("user.creds"))
            .env("KUBECENSUS_NATS_CA_FILE", dir.join("ca.pem"))
            .env("KUBECENSUS_NATS_TLS_CERT_FILE", dir.join("client.pem"))
            .env("KUBECENSUS_NATS_TLS_KEY_FILE", dir.join("client.key"));
        command
    };
    // The worker: TLS settings in the URL, the password in a file.
    let mut worker =
        command("worker", &format!("{database_url}?sslmode=verify-full&sslrootcert={}", dir.join("ca.pem").display()));
    worker.env("KUBECENSUS_DATABASE_PASSWORD_FILE", dir.join("db-password"));
    env.spawn("worker", worker).unwrap();
    // The scheduler: libpq's environment variables.
    let scheduler = || {
        let mut scheduler = command("scheduler", &database_url);
        scheduler
            .env("PGSSLMODE", "verify-full")
            .env("PGSSLROOTCERT", dir.join("ca.pem"))
            .env("PGPASSWORD", &password)
            .args(["refresh", "--wait", "--table", "kubernetes_pods"]);
        tokio::process::Command::from(scheduler)
    };
    // Two authentication methods at once stop it before it publishes anything.
    write(&dir, "token", "s3cret-token\n");
    let clash = scheduler().env("KUBECENSUS_NATS_TOKEN_FILE", dir.join("token")).output().await.unwrap();
    let clash_stderr = String::from_utf8_lossy(&clash.stderr);
    assert!(!clash.status.success());
    assert!(
        clash_stderr.contains("give one NATS authentication method, not --nats-creds-file and --nats-token-file"),
        "{clash_stderr}"
    );
    let output = scheduler().output().await.unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{stdout}\n{stderr}\nworker: {}", env.log("worker"));
    assert!(stdout.contains("succeeded"), "{stdout}");
    assert_same_pods(&env.pool, &fleet, "sim-01").await;

    // The worker's connections are TLS, as kubecensus; no log shows a secret.
    let tls_sessions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE usename = 'kubecensus' AND ssl",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert!(tls_sessions > 0, "no TLS session of kubecensus");
    let seed = creds.lines().find(|line| line.starts_with("SU")).unwrap();
    for log in [env.log("worker"), stderr.into_owned()] {
        assert!(!log.contains(&password) && !log.contains(seed), "a secret in a log: {log}");
    }
}
