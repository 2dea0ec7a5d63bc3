"""Smoke test for seller.py: MCP handshake, submitted create with push config, /complete -> signed webhooks
(RFC 9421 verified with the SDK verifier against the served JWKS; legacy HMAC verified with the SDK),
idempotent replay/conflict. Run: .venv/bin/python tests/peers/smoke.py
Note: importing the adcp SDK takes ~15-18 s on this host, which dominates the run time."""

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
RECEIVED = []


class Receiver(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        RECEIVED.append({"path": self.path, "headers": dict(self.headers.items()), "body": body})
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


def http(method, url, body=None, headers=None):
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"content-type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, dict(r.headers.items()), r.read()


def main():
    seller = subprocess.Popen([sys.executable, os.path.join(HERE, "seller.py"), "--port", "0", "--control-port", "0",
                               "--create", "submitted"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    recv = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=recv.serve_forever, daemon=True).start()
    rurl = f"http://127.0.0.1:{recv.server_address[1]}"
    try:
        # import the SDK verifier while the seller boots
        from adcp.signing.jwks import StaticJwksResolver
        from adcp.signing.webhook_hmac import LegacyWebhookHmacOptions, verify_webhook_hmac
        from adcp.signing.webhook_verifier import WebhookVerifyOptions, verify_webhook_signature

        ready = json.loads(seller.stdout.readline())
        print("ready:", ready)
        mcp, ctl = ready["mcp_url"], ready["control_url"]
        acc = {"accept": "application/json, text/event-stream"}
        _, h, b = http("POST", mcp, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "smoke", "version": "1"}}}, acc)
        sid = h.get("mcp-session-id") or h.get("Mcp-Session-Id")
        assert sid, h
        hs = {**acc, "mcp-session-id": sid, "authorization": "Bearer buyer-token"}
        http("POST", mcp, {"jsonrpc": "2.0", "method": "notifications/initialized"}, hs)

        def call(i, name, args):
            _, _, b = http("POST", mcp, {"jsonrpc": "2.0", "id": i, "method": "tools/call",
                                         "params": {"name": name, "arguments": args}}, hs)
            res = json.loads(b)["result"]
            return res.get("structuredContent") or json.loads(res["content"][0]["text"])

        caps = call(2, "get_adcp_capabilities", {})
        print("caps:", caps)
        assert caps["webhook_signing"]["profile"] == "adcp/webhook-signing/v1"

        def create(i, key, op, pnc, budget=1000):
            return call(i, "create_media_buy", {
                "idempotency_key": key, "context": {"operation_id": op}, "brand": {"domain": "example.com"},
                "start_time": "2030-01-01T00:00:00Z", "end_time": "2030-02-01T00:00:00Z",
                "packages": [{"product_id": "p1", "budget": budget, "pricing_option_id": "cpm"}],
                "push_notification_config": pnc})

        # RFC 9421 (no authentication block)
        r1 = create(3, "key-00000000000000001", "op-1", {"url": rurl + "/wh/rfc", "token": "tok-rfc-123456789",
                                                          "operation_id": "op-1"})
        print("create (9421):", r1)
        assert r1["status"] == "submitted" and r1["task_id"]
        rep = create(4, "key-00000000000000001", "op-1", {"url": rurl + "/wh/rfc", "token": "tok-rfc-123456789",
                                                          "operation_id": "op-1"})
        assert rep.get("replayed") is True and rep["task_id"] == r1["task_id"], rep
        conf = create(5, "key-00000000000000001", "op-1", {"url": rurl + "/wh/rfc"}, budget=2)
        assert conf["errors"][0]["code"] == "IDEMPOTENCY_CONFLICT", conf
        _, _, b = http("POST", ctl + "/complete", {"task_id": r1["task_id"], "status": "completed"})
        print("complete:", b.decode()[:300])
        w = RECEIVED[-1]
        _, _, jwks = http("GET", ready["jwks_url"])
        opts = WebhookVerifyOptions(jwks_resolver=StaticJwksResolver(json.loads(jwks)))
        v = verify_webhook_signature(method="POST", url=rurl + "/wh/rfc", headers=w["headers"], body=w["body"],
                                     options=opts)
        payload = json.loads(w["body"])
        print("9421 verified:", v, "payload:", payload)
        assert payload.get("token") == "tok-rfc-123456789" and payload.get("operation_id") == "op-1"

        # legacy HMAC
        secret = "s" * 32
        r2 = create(6, "key-00000000000000002", "op-2", {
            "url": rurl + "/wh/hmac", "token": "tok-hmac-12345678", "operation_id": "op-2",
            "authentication": {"schemes": ["HMAC-SHA256"], "credentials": secret}})
        http("POST", ctl + "/complete", {"task_id": r2["task_id"], "status": "completed"})
        w = RECEIVED[-1]
        assert w["path"] == "/wh/hmac"
        verify_webhook_hmac(headers=w["headers"], body=w["body"], options=LegacyWebhookHmacOptions(
            secret=secret.encode(), sender_identity="seller", now=time.time()))
        print("hmac verified; headers:", {k: v for k, v in w["headers"].items() if k.lower().startswith("x-adcp")})

        _, _, mb = http("GET", ctl + "/media_buys")
        mb = json.loads(mb)
        assert mb["created_per_operation_id"] == {"op-1": 1, "op-2": 1}, mb
        _, _, calls = http("GET", ctl + "/calls")
        assert json.loads(calls)[0]["headers"]["authorization"] == "Bearer buyer-token"
        print("SMOKE OK")
    finally:
        seller.kill()
        recv.shutdown()


if __name__ == "__main__":
    main()
