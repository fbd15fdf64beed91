#!/usr/bin/env bash
# Runs everything CI runs: formatting, lints, and every test (unit, conformance, crash,
# end-to-end). Installs what the tests need when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in fmt clippy; do
    if ! cargo "$tool" --version >/dev/null 2>&1; then
        echo "error: cargo $tool is not installed (rustup component add ${tool/fmt/rustfmt})" >&2
        exit 1
    fi
done

# The InfluxDB conformance tests start their own influxd (InfluxDB 1.x, Debian package
# `influxdb`); install it when missing.
if ! command -v influxd >/dev/null 2>&1; then
    echo "== installing influxdb (influxd is missing)"
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update
    $sudo apt-get install -y influxdb influxdb-client
fi

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== tests"
cargo test --workspace --locked
