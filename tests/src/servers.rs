//! Private PostgreSQL and NATS servers, for the tests that restart or crash them: restarting the
//! machine's shared servers would disturb every other test running in parallel. Each server runs
//! the real binary on a free loopback port with its data in a temporary folder, and is stopped
//! and removed on drop.

use std::{
    io::Write,
    net::TcpListener,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context;
use rcgen::ExtendedKeyUsagePurpose;

use crate::certs::TestCa;

/// A free TCP port on 127.0.0.1 (free when asked; the server binds it right after).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something accepts connections on `port`.
pub(crate) async fn wait_for_port(port: u16, what: &str) -> anyhow::Result<()> {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{what} did not listen on port {port}")
}

/// Runs a command to completion and fails with its output if it fails.
pub(crate) fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command.stdin(Stdio::null()).output().with_context(|| format!("running {command:?}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Where PostgreSQL's server programs are: `pg_config --bindir`, else Debian's newest version.
fn postgres_bin(program: &str) -> anyhow::Result<PathBuf> {
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
        && output.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if dir.join(program).exists() {
            return Ok(dir.join(program));
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")?
        .filter_map(|entry| Some(entry.ok()?.path().join("bin").join(program)))
        .filter(|path| path.exists())
        .collect();
    versions.sort();
    versions.pop().with_context(|| format!("no PostgreSQL {program} found"))
}

/// A private PostgreSQL cluster (trust auth on loopback), owned by the `postgres` user when the
/// tests run as root, since PostgreSQL refuses to run as root.
pub struct TempPostgres {
    pub port: u16,
    data: PathBuf,
    dir: PathBuf,
}

impl TempPostgres {
    pub async fn start() -> anyhow::Result<Self> {
        let server = Self::init()?;
        server.start_server().await?;
        Ok(server)
    }

    /// A server with `ssl = on` and a server certificate `ca` signs (for `127.0.0.1` and
    /// `localhost`). `postgres` still connects with trust, over TLS or not; every other role
    /// only over TLS with a password (`hostssl ... scram-sha-256`).
    pub async fn start_tls(ca: &TestCa) -> anyhow::Result<Self> {
        let server = Self::init()?;
        ca.issue("postgres", ExtendedKeyUsagePurpose::ServerAuth)?
            .write(&server.data.join("server.crt"), &server.data.join("server.key"))?;
        std::fs::set_permissions(server.data.join("server.key"), std::fs::Permissions::from_mode(0o600))?;
        let mut conf = std::fs::OpenOptions::new().append(true).open(server.data.join("postgresql.conf"))?;
        writeln!(conf, "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'")?;
        std::fs::write(
            server.data.join("pg_hba.conf"),
            "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
        )?;
        if is_root() {
            run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&server.data))?;
        }
        server.start_server().await?;
        Ok(server)
    }

    /// An initialized, stopped cluster.
    fn init() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("kubecensus-pg-{}", uuid::Uuid::new_v4().simple()));
        let data = dir.join("data");
        std::fs::create_dir_all(&dir)?;
        let server = Self { port: free_port()?, data, dir };
        if is_root() {
            run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&server.dir))?;
        }
        let initdb = postgres_bin("initdb")?;
        let mut init = server.as_owner(&[initdb.to_str().context("path")?, "-A", "trust", "-U", "postgres", "-D"])?;
        run(init.arg(&server.data))?;
        Ok(server)
    }

    /// A command run as the data folder's owner.
    fn as_owner(&self, program_and_args: &[&str]) -> anyhow::Result<Command> {
        let mut command = if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).args(program_and_args);
            command
        } else {
            let mut command = Command::new(program_and_args[0]);
            command.args(&program_and_args[1..]);
            command
        };
        command.stdin(Stdio::null());
        Ok(command)
    }

    fn pg_ctl(&self, args: &[&str]) -> anyhow::Result<Command> {
        let pg_ctl = postgres_bin("pg_ctl")?;
        let mut command = self.as_owner(&[pg_ctl.to_str().context("path")?])?;
        command.arg("-D").arg(&self.data).args(args);
        Ok(command)
    }

    async fn start_server(&self) -> anyhow::Result<()> {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on", self.port, self.dir.display());
        let log = self.dir.join("postgres.log");
        run(&mut self.pg_ctl(&["-w", "-l", log.to_str().context("path")?, "-o", &options, "start"])?).with_context(
            || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(10).collect();
                format!("PostgreSQL's log ends:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
            },
        )?;
        wait_for_port(self.port, "PostgreSQL").await
    }

    /// A hot standby of this server on another port: `pg_basebackup -R -X stream
    /// --checkpoint=fast` (which writes `standby.signal` and `primary_conninfo`) through a
    /// replication slot of its own (`-C -S`: the primary keeps the WAL a standby that fell
    /// behind still needs), started with `hot_standby_feedback = on` so that vacuum on the
    /// primary keeps the rows its readers' snapshots need (PostgreSQL docs, "Hot Standby",
    /// Handling Query Conflicts). Stopped and removed on drop like the primary.
    pub async fn standby(&self) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("kubecensus-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let standby = Self { port: free_port()?, data: dir.join("data"), dir };
        if is_root() {
            run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&standby.dir))?;
        }
        let basebackup = postgres_bin("pg_basebackup")?;
        let port = self.port.to_string();
        let mut backup = standby.as_owner(&[
            basebackup.to_str().context("path")?,
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-R",
            "-X",
            "stream",
            // An immediate checkpoint: the default, spread, paces it over up to
            // `checkpoint_completion_target` × `checkpoint_timeout` (4.5 min by default) when the
            // primary has just been written to (pg_basebackup docs, `--checkpoint`).
            "--checkpoint=fast",
            "-C",
            "-S",
            &format!("standby_{}", standby.port),
            "-D",
        ])?;
        run(backup.arg(&standby.data))?;
        let mut conf = std::fs::OpenOptions::new().append(true).open(standby.data.join("postgresql.conf"))?;
        writeln!(conf, "hot_standby_feedback = on")?;
        standby.start_server().await?;
        Ok(standby)
    }

    /// Gives the server's processes the nice value `nice` (`renice`): the postmaster and its
    /// children now, and so every process it starts later (a fork keeps its parent's). At 19 a
    /// server on a busy machine runs on what the others leave.
    pub fn renice(&self, nice: i32) -> anyhow::Result<()> {
        let pid = self.postmaster_pid()?;
        let children = Command::new("pgrep").args(["-P", &pid]).output()?;
        let children = String::from_utf8_lossy(&children.stdout);
        let mut renice = Command::new("renice");
        renice.args(["-n", &nice.to_string(), "-p", &pid]).args(children.split_whitespace());
        run(renice.stdout(Stdio::null()))
    }

    /// The postmaster's process id: the first line of `postmaster.pid` in the data folder.
    fn postmaster_pid(&self) -> anyhow::Result<String> {
        let pid_file = std::fs::read_to_string(self.data.join("postmaster.pid"))?;
        Ok(pid_file.lines().next().context("empty postmaster.pid")?.trim().to_owned())
    }

    /// The URL of a database on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A clean restart: connections are closed, the server shuts down and starts again.
    pub async fn restart(&self) -> anyhow::Result<()> {
        self.stop()?;
        self.start_server().await
    }

    /// A clean shutdown: connections are closed, the server stops until [`Self::start_again`].
    pub fn stop(&self) -> anyhow::Result<()> {
        run(&mut self.pg_ctl(&["-w", "-m", "fast", "stop"])?)
    }

    /// Starts the server stopped by [`Self::stop`] on the same port and data.
    pub async fn start_again(&self) -> anyhow::Result<()> {
        self.start_server().await
    }

    /// A crash: SIGKILL to the postmaster, then a start, which runs crash recovery.
    pub async fn crash_and_recover(&self) -> anyhow::Result<()> {
        let pid = self.postmaster_pid()?;
        run(Command::new("kill").args(["-KILL", &pid]))?;
        // The postmaster's children notice its death and exit; until they all have, a new
        // postmaster refuses to start on the same data folder. Try for a while.
        let mut last_error = None;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            match self.start_server().await {
                Ok(()) => return Ok(()),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.expect("tried at least once"))
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        if let Ok(mut command) = self.pg_ctl(&["-m", "immediate", "stop"]) {
            let _ = command.stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// A private nats-server with JetStream, its store in a temporary folder that outlives restarts,
/// and its HTTP monitoring (`/jsz`, what KEDA's nats-jetstream trigger reads) on `monitor_port`.
pub struct TempNats {
    pub port: u16,
    pub monitor_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl TempNats {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| Ok(String::new())).await
    }

    /// A server requiring TLS with a certificate `ca` signs, and with the settings `auth` (a
    /// nats-server configuration fragment: `authorization { ... }`, or an operator's). With
    /// `verify`, clients must show a certificate `ca` signs too (mutual TLS).
    pub async fn start_tls(ca: &TestCa, verify: bool, auth: &str) -> anyhow::Result<Self> {
        Self::start_with(|dir| {
            let (ca_file, cert_file, key_file) = (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"));
            ca.write(&ca_file)?;
            ca.issue("nats", ExtendedKeyUsagePurpose::ServerAuth)?.write(&cert_file, &key_file)?;
            Ok(format!(
                "tls {{\n  cert_file: {cert_file:?}\n  key_file: {key_file:?}\n  ca_file: {ca_file:?}\n  verify: {verify}\n}}\n{auth}\n"
            ))
        })
        .await
    }

    /// A server whose configuration file is the listen address, JetStream and what `extra`
    /// writes for the server's folder.
    async fn start_with(extra: impl FnOnce(&Path) -> anyhow::Result<String>) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("kubecensus-nats-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let (port, monitor_port) = (free_port()?, free_port()?);
        let config = format!(
            "host: 127.0.0.1\nport: {port}\nhttp: \"127.0.0.1:{monitor_port}\"\njetstream {{\n  store_dir: {:?}\n}}\n{}",
            dir.join("store"),
            extra(&dir)?
        );
        std::fs::write(dir.join("nats.conf"), config)?;
        let mut nats = Self { port, monitor_port, dir, child: None };
        nats.spawn().await?;
        Ok(nats)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("nats.log"))?;
        let child = Command::new(nats_server_binary())
            .arg("-c")
            .arg(self.dir.join("nats.conf"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting nats-server")?;
        self.child = Some(child);
        wait_for_port(self.port, "nats-server").await.with_context(|| self.log())
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nats.log")).unwrap_or_default()
    }

    /// Stops the server (SIGTERM: it flushes its store) and starts it again on the same port
    /// and store, after `down` of downtime.
    pub async fn restart(&mut self, down: Duration) -> anyhow::Result<()> {
        self.restart_with(down, false).await
    }

    /// The same, with the store deleted while it is down: a pod without a volume, or a replaced
    /// volume. Streams and consumers are gone when it comes back.
    pub async fn restart_empty(&mut self, down: Duration) -> anyhow::Result<()> {
        self.restart_with(down, true).await
    }

    async fn restart_with(&mut self, down: Duration, wipe: bool) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            run(Command::new("kill").args(["-TERM", &child.id().to_string()]))?;
            child.wait()?;
        }
        if wipe {
            std::fs::remove_dir_all(self.dir.join("store"))?;
        }
        tokio::time::sleep(down).await;
        self.spawn().await
    }
}

impl Drop for TempNats {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nats_server_binary() -> PathBuf {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"]
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}
