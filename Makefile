# kubecensus: the two commands of the quick start, and the services they need.
.PHONY: demo test services lint bench bench-scale image

# Services up, a simulated fleet (or KUBECONFIG=...), two workers, one refresh, a report.
demo:
	bash deploy/demo.sh

# Every test, against the real PostgreSQL and NATS.
test: services
	bash deploy/test.sh

# PostgreSQL and nats-server with JetStream on loopback; installs them on a fresh Debian machine.
services:
	bash deploy/services.sh

# The benchmark (BENCHMARKS.md): optimized binaries, then every section on the default fleet.
# Knobs: make bench BENCH_ARGS='--clusters 20 --skip huge' (bench --help lists them).
bench: services
	cargo build --profile bench-release --workspace --bins
	$${CARGO_TARGET_DIR:-target}/bench-release/bench $(BENCH_ARGS)

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# kubecensus at 1,000 clusters (BENCHMARKS.md): a private PostgreSQL, 1,000 simulated clusters,
# first load, refresh with churn, size, queries. Knobs: make bench-scale BENCH_SCALE_ARGS='--pods 1000'
# ('--profile rfc': 300 clusters x 2,000 namespaces; '--nats-cluster' needs NATS_SERVER, a
# nats-server 2.11 or newer such as the one deploy/test-deps.sh installs).
bench-scale: services
	cargo build --profile bench-release --workspace --bins
	$${CARGO_TARGET_DIR:-target}/bench-release/bench-scale $(BENCH_SCALE_ARGS)

# The container image (Dockerfile): both binaries, run by deploy/kubernetes. Needs docker or podman
# with a running daemon (or rootless podman); IMAGE=registry.example.com/kubecensus:1.0 to name it.
IMAGE ?= kubecensus:$(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
image:
	@engine=$$(for e in docker podman; do command -v $$e >/dev/null && $$e info >/dev/null 2>&1 && { echo $$e; break; }; done); \
	if [ -z "$$engine" ]; then \
	  echo "make image: no container engine with a running daemon here (docker or podman); build the Dockerfile where one runs" >&2; exit 1; \
	fi; \
	echo "$$engine build -t $(IMAGE) ."; \
	$$engine build -t $(IMAGE) .
