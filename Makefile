# kubecensus: the two commands of the quick start, and the services they need.
.PHONY: demo test services lint bench bench-scale

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
# first load, refresh with churn, size, queries. Knobs: make bench-scale BENCH_SCALE_ARGS='--pods 1000'.
bench-scale: services
	cargo build --profile bench-release --workspace --bins
	$${CARGO_TARGET_DIR:-target}/bench-release/bench-scale $(BENCH_SCALE_ARGS)
