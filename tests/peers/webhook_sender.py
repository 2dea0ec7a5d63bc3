"""Sends AdCP webhooks with the official Python SDK (adcp.webhooks.WebhookSender), for the
orchestrator's end-to-end tests.

    python webhook_sender.py keygen KID PEM_OUT      -> prints the public JWK (JSON)
    python webhook_sender.py send < scenario.json    -> prints one JSON result per step

A scenario: {"mode": "hmac" | "rfc9421", "secret": str, "pem": path, "kid": str, "url": str,
"token": str, "operation_id": str, "task_id": str, "steps": [...]}. Steps:
  {"op": "send", "status": ..., "result": {...}}  a fresh delivery through the SDK
  {"op": "resend"}       the SDK's retry of the last delivery: same bytes and key, fresh signature
  {"op": "replay"}       the SDK's last request again byte for byte, signature headers included
  {"op": "tamper"}       the SDK's last signed headers with a modified body
  {"op": "stale"}        the SDK's last body signed 20 minutes in the past
Each result: {"op", "status_code", "body", "idempotency_key"}.
"""

import asyncio
import hashlib
import hmac
import json
import sys
import time

import httpx
from adcp.signing.crypto import load_private_key_pem
from adcp.signing.keygen import generate_ed25519
from adcp.signing.webhook_signer import sign_webhook
from adcp.webhooks import WebhookSender


def keygen(kid, pem_out):
    pem, jwk = generate_ed25519(kid, adcp_use="request-signing")
    with open(pem_out, "wb") as f:
        f.write(pem)
    print(json.dumps(jwk))


async def send(scenario):
    captured = []

    async def capture(request):
        await request.aread()
        captured.append((dict(request.headers), request.content))

    client = httpx.AsyncClient(event_hooks={"request": [capture]})
    mode = scenario["mode"]
    if mode == "hmac":
        sender = WebhookSender.from_adcp_legacy_hmac(
            scenario["secret"].encode(), key_id="seller", client=client, allow_private_destinations=True
        )
    else:
        key = load_private_key_pem(open(scenario["pem"], "rb").read())
        sender = WebhookSender(
            private_key=key, key_id=scenario["kid"], alg="ed25519", client=client, allow_private_destinations=True
        )
    url = scenario["url"]
    results = []
    last = None
    sdk_request = None
    async with sender:
        for step in scenario["steps"]:
            op = step["op"]
            if op == "send":
                last = await sender.send_mcp(
                    url=url,
                    task_id=scenario["task_id"],
                    task_type="create_media_buy",
                    status=step["status"],
                    result=step.get("result"),
                    operation_id=scenario["operation_id"],
                    token=scenario["token"],
                )
                status, body = last.status_code, last.response_body
                sdk_request = captured[-1]
            elif op == "resend":
                last = await sender.resend(last)
                status, body = last.status_code, last.response_body
                sdk_request = captured[-1]
            else:
                # Always derived from the SDK's last delivery, never from a forged one.
                headers, raw = sdk_request
                headers = {k: v for k, v in headers.items() if k.lower() not in ("content-length", "host")}
                if op == "tamper":
                    raw = raw.replace(b'"completed"', b'"failed"').replace(b'"working"', b'"canceled"')
                elif op == "stale":
                    past = int(time.time()) - 1200
                    if mode == "hmac":
                        mac = hmac.new(scenario["secret"].encode(), f"{past}.".encode() + raw, hashlib.sha256)
                        for k in list(headers):
                            if k.lower() in ("x-adcp-signature", "x-adcp-timestamp"):
                                del headers[k]
                        headers["X-ADCP-Timestamp"] = str(past)
                        headers["X-ADCP-Signature"] = "sha256=" + mac.hexdigest()
                    else:
                        key = load_private_key_pem(open(scenario["pem"], "rb").read())
                        base = {"content-type": "application/json"}
                        signed = sign_webhook(
                            method="POST", url=url, headers=base, body=raw, private_key=key,
                            key_id=scenario["kid"], alg="ed25519", created=past,
                        )
                        headers = {"content-type": "application/json", **signed.as_dict()}
                r = await client.post(url, content=raw, headers=headers)
                status, body = r.status_code, r.content
            results.append({"op": op, "status_code": status, "body": body.decode(errors="replace"),
                            "idempotency_key": last.idempotency_key if last else None})
    await client.aclose()
    print(json.dumps(results))


if __name__ == "__main__":
    if sys.argv[1] == "keygen":
        keygen(sys.argv[2], sys.argv[3])
    else:
        asyncio.run(send(json.load(sys.stdin)))
