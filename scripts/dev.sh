#!/usr/bin/env bash
# First run on a developer's machine, in one command: installs what the build needs, creates
# `.env` with fresh development secrets the first time, and runs the app with development
# settings (plain-HTTP sellers on loopback allowed) on http://127.0.0.1:3000.
#
# Usage: scripts/dev.sh            build and run (needs Spin 4.0.x; installs trigger-cron)
#        scripts/dev.sh --env-only create `.env` if missing and print where the keys are
# ENV_FILE overrides the file's path (default: .env beside spin.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
env_file="${ENV_FILE:-.env}"

# 32 random bytes as hex, from the kernel's CSPRNG (no openssl needed).
random_hex() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }

if [ ! -f "$env_file" ]; then
  umask 077
  cat > "$env_file" <<ENV
# Development settings and secrets, made by scripts/dev.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ).
# Spin reads SPIN_VARIABLE_* from here; keep this file out of git (it is ignored).
SPIN_VARIABLE_ADMIN_API_KEY=dev-admin-$(random_hex)
SPIN_VARIABLE_SWEEP_TOKEN=dev-sweep-$(random_hex)
SPIN_VARIABLE_METRICS_TOKEN=dev-metrics-$(random_hex)
SPIN_VARIABLE_ENCRYPTION_KEY=$(random_hex)
SPIN_VARIABLE_PUBLIC_BASE_URL=http://127.0.0.1:3000
SPIN_VARIABLE_EXTRA_OUTBOUND_HOST=http://127.0.0.1:*
SPIN_VARIABLE_ALLOW_PRIVATE_NETWORKS=true
ENV
  echo "==> created $env_file with fresh development secrets"
fi
admin_key=$(sed -n 's/^SPIN_VARIABLE_ADMIN_API_KEY=//p' "$env_file")
echo "==> admin API key (for POST /api/v1/tenants): SPIN_VARIABLE_ADMIN_API_KEY in $env_file"
[ "${1:-}" = "--env-only" ] && exit 0

# rustup does not add rust-toolchain.toml's targets to a toolchain that is already installed.
rustup target add wasm32-wasip2
command -v wasm-opt >/dev/null || echo "note: without wasm-opt (binaryen) the components are built larger than 1 MiB; see README \"Benchmarks\"" >&2
if ! command -v spin >/dev/null; then
  echo "spin not found: install Spin 4.0.x (https://spinframework.dev), then run this again" >&2
  exit 1
fi
spin plugins list --installed 2>/dev/null | grep -q '^trigger-cron' \
  || spin plugins install trigger-cron --yes
# Exported as well, for Spin versions that read only the environment.
set -a
# shellcheck disable=SC1090
. "./$env_file"
set +a
echo "==> try: curl -s -X POST localhost:3000/api/v1/tenants -H \"Authorization: Bearer ${admin_key}\" -H 'content-type: application/json' -d '{\"name\":\"Acme\"}'"
exec spin build --up --listen 127.0.0.1:3000
