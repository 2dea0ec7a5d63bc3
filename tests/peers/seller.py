"""AdCP sales agent peer for the orchestrator's e2e tests, built on adcp.server (MCP, Streamable HTTP).

    python tests/peers/seller.py --port 0 --control-port 0 [--create sync|submitted]
        [--replay-ttl 86400 | --no-replay-ttl] [--adcp-version 3.0|3.1|3.2] [--host 127.0.0.1]

Prints one JSON line when ready: {"mcp_url", "control_url", "brand_json_url", "jwks_url", "kid"}.
See README.md for the control API.
"""

import argparse
import asyncio
import copy
import hashlib
import json
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import uvicorn
from adcp.server import ADCPHandler, create_mcp_server
from adcp.signing.crypto import load_private_key_pem
from adcp.signing.keygen import generate_ed25519
from adcp.webhooks import WebhookSender
from starlette.responses import JSONResponse
from starlette.routing import Route

LOCK = threading.RLock()
STATE = {
    "calls": [],
    "media_buys": {},          # media_buy_id -> record
    "tasks": {},               # task_id -> record
    "idempotency": {},         # key -> {"hash", "response"}
    "created_per_key": {},
    "created_per_operation": {},
    "mode": {"create": "sync", "fail_next": 0, "fail_with": "SERVICE_UNAVAILABLE", "down": False},
    "deliveries": [],
}
CFG = {}
CURRENT_HEADERS = threading.local()

# What a seller of each AdCP release declares and answers differently (the release's schemas are
# in adcp/_schemas/<release>). `supported_versions` arrived in 3.1; 3.0 declares only
# `major_versions`. A completed create's result: 3.0 puts the buy's status in `status`, 3.1 adds
# `media_buy_status` and mirrors it in the deprecated `status`, 3.2 has `media_buy_status` only.
RELEASES = {
    "3.0": {"supported_versions": None, "buy_status": ("status",)},
    "3.1": {"supported_versions": ["3.0", "3.1"], "buy_status": ("media_buy_status", "status")},
    "3.2": {"supported_versions": ["3.0", "3.1", "3.2"], "buy_status": ("media_buy_status",)},
}


def _free_port(host):
    s = socket.socket()
    s.bind((host, 0))
    p = s.getsockname()[1]
    s.close()
    return p


def _d(params):
    if hasattr(params, "model_dump"):
        return params.model_dump(mode="json", exclude_none=True)
    return dict(params or {})


def _hash(payload):
    p = {k: v for k, v in payload.items() if k not in ("idempotency_key",)}
    return hashlib.sha256(json.dumps(p, sort_keys=True).encode()).hexdigest()


def _error(code, message, recovery="transient"):
    return {"errors": [{"code": code, "message": message, "recovery": recovery}]}


class Tools:
    """The tools every release has. Not an ADCPHandler: the SDK counts a tool as implemented only
    where a class below the nearest `advertised_tools` declaration defines it."""

    async def get_adcp_capabilities(self, params, context=None):
        caps = {
            "adcp": {"major_versions": [3]},
            "supported_protocols": ["media_buy"],
            "webhook_signing": {
                "supported": True,
                "profile": "adcp/webhook-signing/v1",
                "algorithms": ["ed25519"],
                "legacy_hmac_fallback": True,
                "delivery_retry_horizon_seconds": 86400,
            },
        }
        release = RELEASES.get(CFG["adcp_version"])
        if release and release["supported_versions"]:
            caps["adcp"]["supported_versions"] = release["supported_versions"]
        # The spec's discriminated union: `supported: true` with the window, or `supported: false`.
        if CFG["replay_ttl"] is not None:
            caps["adcp"]["idempotency"] = {"supported": True, "replay_ttl_seconds": CFG["replay_ttl"]}
        else:
            caps["adcp"]["idempotency"] = {"supported": False}
        return caps

    async def create_media_buy(self, params, context=None):
        p = _d(params)
        key = p.get("idempotency_key")
        with LOCK:
            mode = STATE["mode"]
            if mode["fail_next"] > 0 and mode["fail_with"] == "SERVICE_UNAVAILABLE":
                mode["fail_next"] -= 1
                return _error("SERVICE_UNAVAILABLE", "injected failure")
            if key and key in STATE["idempotency"]:
                prev = STATE["idempotency"][key]
                if prev["hash"] != _hash(p):
                    return _error("IDEMPOTENCY_CONFLICT", "idempotency_key reused with a different payload",
                                  "correctable")
                resp = copy.deepcopy(prev["response"])
                resp["replayed"] = True
                return resp
            op_id = (p.get("context") or {}).get("operation_id")
            mb_id = "mb_" + uuid.uuid4().hex[:12]
            create_mode = CURRENT_HEADERS.__dict__.get("create_override") or mode["create"]
            rec = {"media_buy_id": mb_id, "idempotency_key": key, "operation_id": op_id,
                   "request": p, "status": "active" if create_mode == "sync" else "pending",
                   "created_at": time.time()}
            STATE["media_buys"][mb_id] = rec
            if key:
                STATE["created_per_key"][key] = STATE["created_per_key"].get(key, 0) + 1
            if op_id:
                STATE["created_per_operation"][op_id] = STATE["created_per_operation"].get(op_id, 0) + 1
            if create_mode == "sync":
                resp = {"status": "completed", "media_buy_id": mb_id, "packages": [],
                        "context": p.get("context")}
            else:
                task_id = "task_" + uuid.uuid4().hex[:12]
                STATE["tasks"][task_id] = {"task_id": task_id, "task_type": "create_media_buy",
                                           "status": "submitted", "media_buy_id": mb_id,
                                           "push_notification_config": p.get("push_notification_config"),
                                           "operation_id": op_id, "result": None,
                                           "created_at": time.time(), "updated_at": time.time()}
                rec["task_id"] = task_id
                resp = {"status": "submitted", "task_id": task_id, "context": p.get("context")}
            resp = {k: v for k, v in resp.items() if v is not None}
            if key:
                STATE["idempotency"][key] = {"hash": _hash(p), "response": copy.deepcopy(resp)}
            return resp

    async def update_media_buy(self, params, context=None):
        p = _d(params)
        with LOCK:
            mb = STATE["media_buys"].get(p.get("media_buy_id"))
            if not mb:
                return _error("MEDIA_BUY_NOT_FOUND", "unknown media_buy_id", "terminal")
            mb.setdefault("updates", []).append(p)
            if p.get("paused") is True:
                mb["status"] = "paused"
            elif p.get("paused") is False:
                mb["status"] = "active"
            return {"status": "completed", "media_buy_id": mb["media_buy_id"], "affected_packages": []}

    async def get_media_buys(self, params, context=None):
        p = _d(params)
        op = (p.get("context") or {}).get("operation_id") or p.get("operation_id")
        ids = p.get("media_buy_ids")
        with LOCK:
            out = []
            for mb in STATE["media_buys"].values():
                if op and mb["operation_id"] != op:
                    continue
                if ids and mb["media_buy_id"] not in ids:
                    continue
                out.append({"media_buy_id": mb["media_buy_id"], "status": mb["status"],
                            "context": {"operation_id": mb["operation_id"]} if mb["operation_id"] else None})
            return {"media_buys": out}

    async def sync_creatives(self, params, context=None):
        p = _d(params)
        return {"creatives": [{"creative_id": c.get("creative_id"), "action": "created"}
                              for c in p.get("creatives", [])]}


class Seller30(Tools, ADCPHandler):
    """AdCP 3.0 has no `get_task_status`/`list_tasks`: its polling tool is `tasks/get` (`tasks_get`)."""
    advertised_tools = {"get_adcp_capabilities", "create_media_buy", "update_media_buy", "get_media_buys",
                        "sync_creatives"}


class Seller(Tools, ADCPHandler):
    advertised_tools = Seller30.advertised_tools | {"get_task_status", "list_tasks"}

    async def get_task_status(self, params, context=None):
        p = _d(params)
        with LOCK:
            t = STATE["tasks"].get(p.get("task_id"))
            if not t:
                return _error("TASK_NOT_FOUND", "unknown task_id", "terminal")
            return _task_view(t, p.get("include_result", False))

    async def list_tasks(self, params, context=None):
        with LOCK:
            return {"tasks": [_task_view(t, False) for t in STATE["tasks"].values()]}


async def tasks_get(task_id: str, include_history: bool = False, adcp_major_version: int | None = None,
                    context: dict | None = None, ext: dict | None = None) -> dict:
    """AdCP 3.0's polling tool: its request's fields (core/tasks-get-request.json); the answer
    carries no `result` (core/tasks-get-response.json), so a buyer finds the buy elsewhere."""
    with LOCK:
        t = STATE["tasks"].get(task_id)
        if not t:
            return _error("TASK_NOT_FOUND", "unknown task_id", "terminal")
        return _task_view(t, False)


def _iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def _task_view(t, include_result):
    v = {"task_id": t["task_id"], "task_type": t["task_type"], "status": t["status"],
         "created_at": t["created_at"], "updated_at": t["updated_at"]}
    if CFG["adcp_version"]:
        # The releases' task views: `protocol` is required, the times are date-times.
        v.update(protocol="media-buy", created_at=_iso(t["created_at"]), updated_at=_iso(t["updated_at"]))
    if include_result and t["result"] is not None:
        v["result"] = t["result"]
    return v


# ---------------------------------------------------------------- ASGI middleware: capture, down, drop
class Capture:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] in CFG.get("static", {}):
            await JSONResponse(CFG["static"][scope["path"]])(scope, receive, send)
            return
        if scope["type"] != "http" or not scope["path"].startswith("/mcp"):
            return await self.app(scope, receive, send)
        with LOCK:
            mode = STATE["mode"]
            down = mode["down"]
        if down:
            await JSONResponse({"error": "down"}, status_code=503)(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            m = await receive()
            body += m.get("body", b"")
            more = m.get("more_body", False)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        try:
            msg = json.loads(body) if body else None
        except ValueError:
            msg = None
        drop = http503 = False
        if isinstance(msg, dict) and msg.get("method") == "tools/call":
            prm = msg.get("params") or {}
            with LOCK:
                STATE["calls"].append({
                    "tool": prm.get("name"), "arguments": prm.get("arguments"), "time": time.time(),
                    "headers": {k: headers[k] for k in ("authorization", "mcp-session-id",
                                "mcp-protocol-version", "idempotency-key", "accept") if k in headers}})
                if mode["fail_next"] > 0 and mode["fail_with"] in ("http_503", "drop_response") \
                        and prm.get("name") == "create_media_buy":
                    mode["fail_next"] -= 1
                    drop = mode["fail_with"] == "drop_response"
                    http503 = not drop
        if http503:
            await JSONResponse({"error": "injected 503"}, status_code=503)(scope, receive, send)
            return
        sent = False

        async def recv():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        if drop:
            async def swallow(message):
                pass
            await self.app(scope, recv, swallow)
            # The create happened; now start a response and abort mid-body so uvicorn closes the
            # connection: the client sees a truncated response, never an answer (uvicorn would turn
            # an exception raised before http.response.start into a 500).
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")]})
            await send({"type": "http.response.body", "body": b"{", "more_body": True})
            raise ConnectionAbortedError("drop_response")
        await self.app(scope, recv, send)


# ---------------------------------------------------------------- webhooks
def _sender(mode, client, cfg):
    if mode == "hmac":
        return WebhookSender.from_adcp_legacy_hmac(cfg["secret"].encode(), key_id="seller", client=client,
                                                  allow_private_destinations=True)
    if mode == "bearer":
        return WebhookSender.from_bearer_token(cfg["token"], client=client, allow_private_destinations=True)
    return WebhookSender(private_key=CFG["key"], key_id=CFG["kid"], alg="ed25519", client=client,
                         allow_private_destinations=True)


def _auth_mode(pnc):
    auth = (pnc or {}).get("authentication") or {}
    schemes = auth.get("schemes") or []
    cred = auth.get("credentials")
    if "HMAC-SHA256" in schemes:
        return "hmac", {"secret": cred}
    if "Bearer" in schemes:
        return "bearer", {"token": cred}
    return "rfc9421", {}


async def _send_webhook(spec):
    """spec: url, task_id, status, task_type, result, operation_id, token, mode, secret/bearer,
    duplicate, resend, tamper_body, stale_timestamp, wrong_mode, replay_nonce, idempotency_key."""
    captured = []

    async def cap(request):
        await request.aread()
        captured.append((dict(request.headers), request.content))

    out = []
    async with httpx.AsyncClient(event_hooks={"request": [cap]}, timeout=10) as client:
        mode = spec.get("mode", "rfc9421")
        if spec.get("wrong_mode"):
            mode = {"rfc9421": "hmac", "hmac": "rfc9421", "bearer": "rfc9421"}[mode]
        cfg = {"secret": spec.get("secret") or "wrong-secret", "token": spec.get("bearer") or "x"}
        sender = _sender(mode, client, cfg)
        async with sender:
            kw = dict(url=spec["url"], task_id=spec["task_id"], task_type=spec.get("task_type", "create_media_buy"),
                      status=spec["status"], result=spec.get("result"), operation_id=spec.get("operation_id") or "op",
                      token=spec.get("token"))
            if spec.get("idempotency_key"):
                kw["idempotency_key"] = spec["idempotency_key"]
            if spec.get("stale_timestamp"):
                from datetime import datetime, timedelta, timezone
                kw["timestamp"] = datetime.now(timezone.utc) - timedelta(minutes=20)
            if spec.get("tamper_body") or (spec.get("stale_timestamp") and mode == "rfc9421") or spec.get("replay_nonce"):
                # Let the SDK build and sign, capture it, then re-post a modified copy.
                r = await sender.send_mcp(**kw)
                out.append(_res("sdk", r.status_code, r.response_body, r.idempotency_key))
                headers, raw = captured[-1]
                headers = {k: v for k, v in headers.items() if k.lower() not in ("content-length", "host")}
                if spec.get("tamper_body"):
                    raw = raw.replace(b'"completed"', b'"failed"').replace(b'"submitted"', b'"working"') + b" "
                if spec.get("stale_timestamp") and mode == "rfc9421":
                    from adcp.signing.webhook_signer import sign_webhook
                    signed = sign_webhook(method="POST", url=spec["url"], headers={"content-type": "application/json"},
                                          body=raw, private_key=CFG["key"], key_id=CFG["kid"], alg="ed25519",
                                          created=int(time.time()) - 1200)
                    headers = {"content-type": "application/json", **signed.as_dict()}
                rr = await client.post(spec["url"], content=raw, headers=headers)
                out.append(_res("modified", rr.status_code, rr.content, r.idempotency_key))
            else:
                r = await sender.send_mcp(**kw)
                out.append(_res("send", r.status_code, r.response_body, r.idempotency_key))
                for _ in range(int(spec.get("duplicate", 0))):
                    r2 = await sender.resend(r)
                    out.append(_res("duplicate", r2.status_code, r2.response_body, r2.idempotency_key))
                if spec.get("resend"):
                    r2 = await sender.resend(r)
                    out.append(_res("resend", r2.status_code, r2.response_body, r2.idempotency_key))
    with LOCK:
        STATE["deliveries"].extend(out)
    return out


def _res(op, status, body, key):
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    return {"op": op, "status_code": status, "body": body, "idempotency_key": key}


# ---------------------------------------------------------------- control API
class Control(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def _json(self, obj, code=200):
        b = json.dumps(obj, default=str).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)

    def do_GET(self):
        with LOCK:
            if self.path == "/calls":
                return self._json(STATE["calls"])
            if self.path == "/media_buys":
                return self._json({"media_buys": list(STATE["media_buys"].values()),
                                   "created_per_idempotency_key": STATE["created_per_key"],
                                   "created_per_operation_id": STATE["created_per_operation"]})
            if self.path == "/tasks":
                return self._json(list(STATE["tasks"].values()))
            if self.path == "/deliveries":
                return self._json(STATE["deliveries"])
            if self.path == "/mode":
                return self._json(STATE["mode"])
        self._json({"error": "not found"}, 404)

    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(n) or b"{}")
        try:
            if self.path == "/mode":
                with LOCK:
                    STATE["mode"].update(body)
                    return self._json(STATE["mode"])
            if self.path == "/reset":
                with LOCK:
                    STATE["calls"].clear()
                return self._json({"ok": True})
            if self.path == "/complete":
                return self._json(self._complete(body))
            if self.path == "/webhook":
                return self._json(asyncio.run(_send_webhook(body)))
        except Exception as e:  # noqa: BLE001
            return self._json({"error": repr(e)}, 500)
        self._json({"error": "not found"}, 404)

    def _complete(self, body):
        with LOCK:
            t = STATE["tasks"][body["task_id"]]
            t["status"] = body.get("status", "completed")
            t["updated_at"] = time.time()
            result = body.get("result")
            if result is None and t["status"] == "completed":
                result = {"media_buy_id": t["media_buy_id"], "packages": []}
                release = RELEASES.get(CFG["adcp_version"])
                for field in release["buy_status"] if release else ():
                    result[field] = "active"
            t["result"] = result
            mb = STATE["media_buys"].get(t["media_buy_id"])
            if mb and t["status"] == "completed":
                mb["status"] = "active"
            pnc = t.get("push_notification_config")
        out = {"task": _task_view(t, True), "deliveries": []}
        if body.get("send_webhook", True) and pnc and pnc.get("url"):
            mode, cred = _auth_mode(pnc)
            spec = {"url": pnc["url"], "task_id": t["task_id"], "status": t["status"], "result": result,
                    "operation_id": pnc.get("operation_id") or t.get("operation_id") or "op",
                    "token": pnc.get("token"), "mode": mode, "secret": cred.get("secret"),
                    "bearer": cred.get("token")}
            spec.update({k: v for k, v in body.items() if k in ("duplicate", "resend", "tamper_body",
                                                                  "stale_timestamp", "wrong_mode", "replay_nonce")})
            out["deliveries"] = asyncio.run(_send_webhook(spec))
        return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--control-port", type=int, default=0)
    ap.add_argument("--create", choices=["sync", "submitted"], default="sync")
    ap.add_argument("--replay-ttl", type=int, default=86400)
    ap.add_argument("--no-replay-ttl", action="store_true")
    ap.add_argument("--adcp-version", choices=sorted(RELEASES), default=None,
                    help="serve as a seller of this AdCP release (default: the original peer)")
    a = ap.parse_args()
    CFG["replay_ttl"] = None if a.no_replay_ttl else a.replay_ttl
    CFG["adcp_version"] = a.adcp_version
    STATE["mode"]["create"] = a.create
    port = a.port or _free_port(a.host)
    origin = f"http://{a.host}:{port}"
    CFG["kid"] = "seller-" + uuid.uuid4().hex[:8]
    pem, jwk = generate_ed25519(CFG["kid"], adcp_use="request-signing")
    CFG["key"] = load_private_key_pem(pem)
    jwk = dict(jwk, use="sig", key_ops=["verify"], adcp_use="request-signing", alg="EdDSA", kid=CFG["kid"])
    mcp_url = origin + "/mcp"
    brand = {"name": "Peer Seller", "agents": [{"type": "sales", "url": mcp_url,
                                                  "jwks_uri": origin + "/.well-known/jwks.json"}]}

    CFG["static"] = {"/.well-known/brand.json": brand, "/.well-known/jwks.json": {"keys": [jwk]}}
    ctl = ThreadingHTTPServer((a.host, a.control_port), Control)
    threading.Thread(target=ctl.serve_forever, daemon=True).start()

    async def brand_ep(request):
        return JSONResponse(brand)

    async def jwks_ep(request):
        return JSONResponse({"keys": [jwk]})

    def announce():
        for _ in range(1000):
            try:
                socket.create_connection((a.host, port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.02)
        print(json.dumps({"mcp_url": mcp_url, "control_url": f"http://{a.host}:{ctl.server_address[1]}",
                          "brand_json_url": origin + "/.well-known/brand.json",
                          "jwks_url": origin + "/.well-known/jwks.json", "kid": CFG["kid"]}), flush=True)

    threading.Thread(target=announce, daemon=True).start()
    legacy = a.adcp_version == "3.0"
    # create_mcp_server rather than serve(): a 3.0 seller polls by `tasks/get`, which the SDK does
    # not define, so it is added to the MCP server as a plain tool.
    mcp = create_mcp_server(Seller30() if legacy else Seller(), name="peer-seller", host=a.host, port=port,
                            validation=None,
                            allowed_hosts=[f"{a.host}:{port}", a.host, "localhost", f"localhost:{port}"])
    if legacy:
        mcp.add_tool(tasks_get, name="tasks/get")
    uvicorn.run(Capture(mcp.streamable_http_app()), host=a.host, port=port, timeout_keep_alive=30)


if __name__ == "__main__":
    main()
