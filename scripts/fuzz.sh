#!/usr/bin/env bash
# Fuzzes every parser of outside input (cargo-fuzz targets in fuzz/) for a bounded time each,
# one target at a time, and fails if any target crashes, panics or hangs.
#
#   scripts/fuzz.sh [seconds-per-target] [target ...]     # default: 60 s, every target
#
# Seeds come from the AdCP test vectors in ../shared/adcp/test-vectors beside the repo (or
# $ADCP_VECTORS), written at run time into the gitignored fuzz/corpus/<target>/; without
# the vectors the targets start from whatever corpus is there. Not part of scripts/test.sh.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

seconds="${1:-60}"
[[ $# -gt 0 ]] && shift
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [[ "$seconds" -eq 0 ]]; then
    echo "usage: scripts/fuzz.sh [seconds-per-target] [target ...]" >&2
    exit 2
fi

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz.sh: cargo-fuzz needs a nightly toolchain: rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

vectors="${ADCP_VECTORS:-$repo/../shared/adcp/test-vectors}"
if [[ -d "$vectors" ]]; then
    python3 - "$vectors" "$repo/fuzz/corpus" <<'PY'
"""Writes seeds for each fuzz target from the AdCP test vectors (never committed)."""
import hashlib, json, pathlib, re, sys

vectors, corpus = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
seeds = {}

def seed(target, data):
    if isinstance(data, str):
        data = data.encode()
    seeds.setdefault(target, set()).add(bytes(data))

def http_text(start, headers, body):
    head = "\n".join([start] + [f"{k}: {v}" for k, v in headers.items()])
    return head.encode() + b"\n\n" + (body.encode() if isinstance(body, str) else body)

def jdump(v):
    return json.dumps(v, separators=(",", ":"))

# Intake control bytes: mode (0 bearer, 1 hmac, 2 rfc9421) | 4 fix token | 8 fix auth
# | 16 bind task | 32 start submitted | 64 P-256 | 128 no cached keys.
INTAKE_FIXED = [0x0C, 0x0D, 0x0E, 0x1E, 0x3D, 0x4E, 0x2C]
JSON_HEADERS = {"Content-Type": "application/json"}

def webhook_body(body):
    seed("webhook_payload", body)
    for control in INTAKE_FIXED:
        seed("intake", bytes([control]) + http_text("POST /webhooks/adcp/op1", JSON_HEADERS, body))
    try:
        v = json.loads(body)
    except ValueError:
        return
    if isinstance(v, dict):
        # The same delivery as a complete envelope addressed to the fuzzed operation, then
        # repeated, then changed under the same key.
        v = {"task_type": "create_media_buy", "timestamp": "2026-04-18T12:00:00Z",
             "idempotency_key": "whk_fuzz_0123456789abcdef", "task_id": "task_456",
             **v, "operation_id": "op1"}
        one = http_text("POST /webhooks/adcp/op1", JSON_HEADERS, jdump(v))
        other = http_text("POST /webhooks/adcp/op1", JSON_HEADERS, jdump(dict(v, status="failed")))
        for control in INTAKE_FIXED:
            seed("intake", bytes([control]) + one + b"\n----\n" + one + b"\n----\n" + other)

def mcp_answer(message):
    body = jdump(message)
    seed("seller_client", http_text("200", JSON_HEADERS, body))
    sse = f"event: message\ndata: {jdump({'jsonrpc': '2.0', 'method': 'notifications/progress'})}\n\n" \
          f"event: message\ndata: {body}\n\n"
    seed("seller_client", http_text("200", {"Content-Type": "text/event-stream"}, sse))

def response(v):
    seed("error_mapping", jdump(v))
    if isinstance(v, dict) and ("jsonrpc" in v or "error" in v):
        mcp_answer(dict(v, id=1))
    else:
        mcp_answer({"jsonrpc": "2.0", "id": 1, "result": v})

def request_vector(r, now):
    method, url = r.get("method", "POST"), r.get("url", "")
    headers, body = r.get("headers", {}), r.get("body", "") or ""
    for prefix in ("", "!", "!!"):
        seed("rfc9421", http_text(f"{prefix}{method} {url}", headers, body))
    # The trust set's special keys and seen nonce (see fuzz_targets/rfc9421.rs).
    label = next((k for k in headers if k.lower() == "signature-input"), None)
    if label:
        for old, new in [(r'keyid="[^"]*"', f'keyid="{kid}"') for kid in
                         ("revoked-kid", "stale-revocation-kid", "over-cap-kid", "sign-only-kid",
                          "test-wrong-purpose-2026")] + [(r'nonce="[^"]*"', 'nonce="seen-nonce"')]:
            changed = dict(headers, **{label: re.sub(old, new, headers[label])})
            seed("rfc9421", http_text(f"!!{method} {url}", changed, body))
    digest = {k.lower(): v for k, v in headers.items()}.get("content-digest")
    if digest:
        seed("content_digest", digest.encode() + b"\n" + body.encode())
    # As a delivery to the receiver: the vector's own headers (refused), and re-signed.
    for control in (0x02, 0x06, 0x0E, 0x4E, 0x8E):
        seed("intake", bytes([control]) + http_text("POST /webhooks/adcp/op1", headers, body))
    webhook_body(body)

def walk(v, now=None):
    if isinstance(v, dict):
        now = v.get("reference_now", now)
        r = v.get("request")
        if isinstance(r, dict) and "headers" in r:
            request_vector(r, now)
        for key in ("payload",):
            if isinstance(v.get(key), dict):
                webhook_body(jdump(v[key]))
        for key in ("response", "expected_error", "message"):
            if isinstance(v.get(key), dict):
                response(v[key])
        if isinstance(v.get("expected_data"), dict):
            seed("api", b"\x04@seller " + jdump(v["expected_data"]).encode() + b"\n----\n" + CREATE)
        if isinstance(v.get("keys"), list):
            brand = {"agents": [{"url": "https://seller.example/mcp", "jwks_uri": "/.well-known/jwks.json"}]}
            seed("jwks", jdump(brand) + "\n----\n" + jdump({"keys": v["keys"]}))
        if "raw_body" in v and "timestamp" in v:
            ts, body = str(v["timestamp"]), v["raw_body"]
            seed("hmac_signature", f"{v.get('expected_signature', '')}\n{ts}\n{body}")
            seed("hmac_signature", f"!\n1776520800\n{body}")
            webhook_body(body)
        for x in v.values():
            walk(x, now)
    elif isinstance(v, list):
        for x in v:
            walk(x, now)
    elif isinstance(v, str):
        s = v.strip()
        if s.startswith(("sha-256=", "sha-512=")):
            seed("content_digest", s + "\n")
        elif s.startswith("sig") and "=(" in s:
            seed("rfc9421", http_text("!!POST https://orch.example/webhooks/adcp/op1",
                                      {"Content-Type": "application/json", "Signature-Input": s}, "{}"))

AUTH = {"Authorization": "Bearer $TENANT", "Content-Type": "application/json"}
ARGS = {"account": {"account_id": "acc_1"}, "brand": {"domain": "acme.com"}, "start_time": "asap",
        "end_time": "2026-12-31T23:59:59Z",
        "packages": [{"product_id": "p1", "budget": 5000, "pricing_option_id": "cpm"}]}
CREATE = http_text("POST /api/v1/operations", dict(AUTH, **{"Idempotency-Key": "camp-42-buy-1"}),
                   jdump({"seller_id": "s1", "task": "create_media_buy", "arguments": ARGS}))
FOLLOW = [
    http_text("GET /api/v1/operations/$OP", AUTH, ""),
    http_text("GET /api/v1/operations/$OP/events", AUTH, ""),
    http_text("GET /api/v1/operations?status=submitted&limit=5", AUTH, ""),
    http_text("POST /internal/sweep", {"Authorization": "Bearer $SWEEP"}, ""),
    http_text("GET /metrics", {"Authorization": "Bearer $METRICS"}, ""),
]
API = [
    [http_text("POST /api/v1/tenants", {"Authorization": "Bearer $ADMIN", **JSON_HEADERS}, '{"name":"Acme"}')],
    [http_text("PUT /api/v1/sellers/acme-ssp", AUTH, jdump({"mcp_url": "https://seller.example/mcp",
                "credentials": "tok", "auth_scheme": "basic", "webhook_mode": "hmac"}))],
    [http_text("GET /api/v1/sellers/s1", AUTH, ""), http_text("DELETE /api/v1/sellers/s1", AUTH, "")],
    [http_text("POST /api/v1/sellers/s1/capabilities", AUTH, "")],
    [http_text("PUT /api/v1/callback", AUTH, jdump({"url": "https://buyer.example/hook"})),
     http_text("GET /api/v1/callback", AUTH, "")],
    [http_text("GET /healthz", {}, ""), http_text("GET /api/v1/openapi.json", {}, "")],
    [b"@seller " + jdump({"status": "submitted", "task_id": "task_1"}).encode(), CREATE, *FOLLOW],
    [b"@seller " + jdump({"status": "completed", "media_buy_id": "mb_1", "packages": []}).encode(),
     CREATE, CREATE, *FOLLOW[:2]],
    [b"@seller-error transient SERVICE_UNAVAILABLE", CREATE, b"@advance 600000", *FOLLOW[3:4], *FOLLOW[:2]],
    [b"@seller-timeout", CREATE, b"@advance 90000000", *FOLLOW[3:4], *FOLLOW[:2]],
    [http_text("POST /api/v1/operations", AUTH, jdump({"seller_id": "s1", "task": "update_media_buy",
                "arguments": {"account": {"account_id": "acc_1"}, "media_buy_id": "mb_1", "paused": True}}))],
    [http_text("POST /api/v1/operations", AUTH, jdump({"seller_id": "s1", "task": "sync_creatives",
                "arguments": {"account": {"account_id": "acc_1"}, "creatives": []}}))],
]
for script in API:
    for control in (0x00, 0x05, 0x06):
        seed("api", bytes([control]) + b"\n----\n".join(script))

for path in sorted(vectors.rglob("*.json")):
    try:
        walk(json.loads(path.read_text()))
    except (ValueError, UnicodeDecodeError) as e:
        print(f"fuzz.sh: skipping {path.name}: {e}", file=sys.stderr)

for target, items in sorted(seeds.items()):
    d = corpus / target
    d.mkdir(parents=True, exist_ok=True)
    for data in items:
        (d / hashlib.sha1(data).hexdigest()).write_bytes(data)
    print(f"fuzz.sh: {len(items):4} seeds for {target}")
PY
else
    echo "fuzz.sh: no test vectors at $vectors; starting from the existing corpus only" >&2
fi

# Debug assertions on, so integer overflow panics instead of wrapping silently.
cargo +nightly fuzz build -a

logs="$repo/fuzz/logs"
mkdir -p "$logs"
failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    echo "fuzz.sh: $t for ${seconds}s"
    status=0
    cargo +nightly fuzz run -a "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -max_len=16384 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$logs/$t.log" 2>&1 || status=$?
    # Final stats, or after a crash the last progress line (`#<runs> ...`).
    execs=$({ grep -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$t.log" ||
        grep -o '^#[0-9]*' "$logs/$t.log" || true; } | grep -o '[0-9]*$' | tail -n 1 || true)
    corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
    if [[ $status -ne 0 ]]; then
        failed+=("$t")
        summary+=("$(printf '%-16s %12s executions  %6s corpus  FAILED (exit %s, see fuzz/logs/%s.log, fuzz/artifacts/%s/)' \
            "$t" "${execs:-?}" "$corpus" "$status" "$t" "$t")")
        tail -n 40 "$logs/$t.log" >&2
    else
        summary+=("$(printf '%-16s %12s executions  %6s corpus  ok' "$t" "${execs:-?}" "$corpus")")
    fi
done

echo
echo "fuzz.sh: ${seconds}s per target"
printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
