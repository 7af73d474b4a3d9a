//! Connection strings as the official clients write them (issue 20, item 9), on real servers: a
//! `NATS_URL` list with a user and password (or a token) in the URL, as nats.go takes it, and a
//! libpq keyword/value `DATABASE_URL`, then both through the binaries for one job.

use std::{path::PathBuf, time::Duration};

use kubecensus::{
    ops::credentials::{DatabaseCredentials, NatsCredentials},
    store,
};
use kubecensus_tests::{
    certs::TestCa,
    fleet::{Fleet, FleetSpec},
    harness::{TestEnv, connect_nats as connect},
    servers::{TempNats, free_port},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_url_list_with_credentials_in_it_connects_as_nats_go_would() {
    let ca = TestCa::new("nats-ca").unwrap();
    let dir = std::env::temp_dir().join(format!("kubecensus-urls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    ca.write(&ca_file).unwrap();
    let tls = NatsCredentials { nats_ca_file: Some(ca_file), ..NatsCredentials::default() };
    // A password with characters a URL must escape: `@` and `/`.
    let nats = TempNats::start_tls(&ca, false, "authorization { user: kc, password: \"p@ss/word\" }").await.unwrap();
    let (down, up) = (free_port().unwrap(), nats.port);

    // A list whose first server is down, the password percent-encoded, a trailing `/`.
    let list = format!("tls://kc:p%40ss%2Fword@127.0.0.1:{down}, tls://kc:p%40ss%2Fword@127.0.0.1:{up}/");
    let client = connect(&list, &tls).await.unwrap_or_else(|err| panic!("{err}\n{}", nats.log()));
    client.flush().await.unwrap();

    let wrong = connect(&format!("tls://kc:wrong-pw@127.0.0.1:{up}"), &tls).await.unwrap_err();
    assert!(
        wrong.starts_with(&format!(
            "queue: NATS at tls://127.0.0.1:{up} refused the credentials (user and password in NATS_URL): "
        )),
        "{wrong}"
    );
    let none = connect(&format!("tls://127.0.0.1:{up}"), &tls).await.unwrap_err();
    assert!(none.contains("asks for credentials and none were given"), "{none}");
    for err in [&wrong, &none] {
        assert!(!err.contains("(none)") && !err.contains("wrong-pw") && !err.contains("p@ss"), "{err}");
    }

    let token = TempNats::start_tls(&ca, false, "authorization { token: \"t0k/en\" }").await.unwrap();
    connect(&format!("tls://t0k%2Fen@127.0.0.1:{}", token.port), &tls)
        .await
        .unwrap_or_else(|err| panic!("{err}\n{}", token.log()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_libpq_keyword_value_string_connects_with_its_settings() {
    let env = TestEnv::new().await.unwrap();
    let keywords = format!(
        "host=127.0.0.1 port = 5432 dbname={} user=kubecensus application_name='kubecensus test' \
         options='-c statement_timeout=7s' sslmode=disable",
        env.services.database
    );
    let pool = store::connect(&keywords, &DatabaseCredentials::default(), 1).await.unwrap();
    let (application, timeout): (String, String) =
        sqlx::query_as("SELECT current_setting('application_name'), current_setting('statement_timeout')")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((application.as_str(), timeout.as_str()), ("kubecensus test", "7s"));

    let err = store::connect("host=127.0.0.1 dbname=x connect_timeout=5", &DatabaseCredentials::default(), 1)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("`connect_timeout` is not one kubecensus supports") && err.contains("write DATABASE_URL as"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binaries_take_a_nats_url_list_and_a_keyword_value_database_url() {
    let mut env = TestEnv::new().await.unwrap();
    let _fleet = Fleet::start(FleetSpec { clusters: 1, pods: 5, ..FleetSpec::default() }, &env.dir).await.unwrap();
    let registry: PathBuf = env.dir.join("clusters.yaml");
    let nats = env.services.nats_url.trim_start_matches("nats://").to_owned();
    let (nats_url, database_url) = (
        format!("nats://127.0.0.1:{},{nats}", free_port().unwrap()),
        format!("host=127.0.0.1 port=5432 dbname={} user=kubecensus", env.services.database),
    );
    let services = env.services.clone();
    let command = |program: &str| {
        let mut command = std::process::Command::new(kubecensus_tests::harness::binary(program));
        services.configure(&mut command, &database_url, &registry);
        command.env("NATS_URL", &nats_url);
        command
    };
    env.spawn("worker", command("worker")).unwrap();
    let mut scheduler = command("scheduler");
    scheduler.env("RUST_LOG", "warn").args(["refresh", "--wait", "--table", "kubernetes_namespaces"]);
    let output = tokio::time::timeout(Duration::from_secs(120), tokio::process::Command::from(scheduler).output())
        .await
        .expect("the refresh ends")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}\n{}", String::from_utf8_lossy(&output.stderr), env.log("worker"));
    assert!(stdout.contains("succeeded"), "{stdout}");
}
