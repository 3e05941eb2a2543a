"""Alertmanager webhook -> GitHub `repository_dispatch`: a drift alert starts the retraining workflow.

    GITHUB_REPOSITORY=owner/name GITHUB_TOKEN_FILE=/run/secrets/github_token \
        RELAY_SECRET_FILE=/run/secrets/relay_secret python -m serving.relay

Alertmanager (monitoring/alertmanager/alertmanager.yml) posts its webhook JSON to `POST /alert` with
`Authorization: Bearer <shared secret>` (its `http_config.authorization.credentials_file`); the relay
answers 401 to any other request before reading its body, comparing in constant time. The secret comes
from RELAY_SECRET_FILE or RELAY_SECRET; the relay refuses to start without one. For each firing alert
not dispatched before (fingerprint and startsAt, kept for the last DISPATCHED_KEPT alerts in memory: a
replayed or repeated webhook starts no second retrain) the relay posts `{"event_type": RETRAIN_EVENT_TYPE, "client_payload": {...}}` to
`{GITHUB_API_URL}/repos/{GITHUB_REPOSITORY}/dispatches`, which starts .github/workflows/retrain.yml.
The payload names the alert, its labels and annotations, when it started and the model version it was
raised against. Resolved alerts are ignored. When GitHub refuses, the relay answers 502 so that
Alertmanager retries. The token comes from GITHUB_TOKEN or the file GITHUB_TOKEN_FILE; it is never logged.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import logging
import os
import threading
import urllib.error
import urllib.request
from collections import OrderedDict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

log = logging.getLogger("serving.relay")
MAX_BODY = 1_000_000
DEFAULT_EVENT_TYPE = "retrain"  # .github/workflows/retrain.yml listens for it
DISPATCHED_KEPT = 10_000  # alerts remembered as dispatched (fingerprint, startsAt): a few hundred kB at most


class RelayError(RuntimeError):
    pass


def github_token(environ=os.environ) -> str:
    if environ.get("GITHUB_TOKEN"):
        return environ["GITHUB_TOKEN"]
    if environ.get("GITHUB_TOKEN_FILE"):
        return Path(environ["GITHUB_TOKEN_FILE"]).read_text().strip()
    raise RelayError("set GITHUB_TOKEN or GITHUB_TOKEN_FILE (a token allowed to dispatch to GITHUB_REPOSITORY)")


def relay_secret(environ=os.environ) -> str:
    """The secret Alertmanager sends as `Authorization: Bearer ...`: RELAY_SECRET_FILE, else RELAY_SECRET."""
    if environ.get("RELAY_SECRET_FILE"):
        value = Path(environ["RELAY_SECRET_FILE"]).read_text().strip()
    else:
        value = environ.get("RELAY_SECRET", "").strip()
    if not value:
        raise RelayError("set RELAY_SECRET_FILE (or RELAY_SECRET) to the secret Alertmanager's webhook sends: "
                         "python -c \"import secrets; print(secrets.token_urlsafe(32))\" > secrets/relay_secret")
    return value


class Dispatched:
    """The alerts already dispatched, the last `kept` of them (oldest forgotten first), safe across threads.
    `claim` reserves an alert before its dispatch, `release` frees it again when the dispatch failed."""

    def __init__(self, kept: int = DISPATCHED_KEPT):
        self.kept, self._keys, self._lock = kept, OrderedDict(), threading.Lock()

    def claim(self, key: tuple) -> bool:
        with self._lock:
            if key in self._keys:
                return False
            self._keys[key] = None
            while len(self._keys) > self.kept:
                self._keys.popitem(last=False)
            return True

    def release(self, key: tuple) -> None:
        with self._lock:
            self._keys.pop(key, None)


def alert_key(payload: dict) -> tuple:
    """What makes one alert: Alertmanager's fingerprint (its labels) and when it started firing."""
    client = payload["client_payload"]
    return (client["fingerprint"] or json.dumps(client["labels"], sort_keys=True), client["starts_at"])


def dispatch_payloads(webhook: dict, event_type: str) -> list[dict]:
    """One repository_dispatch body per firing alert of an Alertmanager webhook message (version 4)."""
    out = []
    for alert in webhook.get("alerts", []):
        if alert.get("status") != "firing":
            continue
        labels, annotations = alert.get("labels", {}), alert.get("annotations", {})
        out.append({"event_type": event_type, "client_payload": {
            "alertname": labels.get("alertname"),
            "model_version": labels.get("version"),
            "labels": labels,
            "annotations": annotations,
            "starts_at": alert.get("startsAt"),
            "fingerprint": alert.get("fingerprint"),
            "alertmanager": webhook.get("externalURL"),
        }})
    return out


def post_dispatch(api_url: str, repository: str, token: str, body: dict, timeout: float = 10) -> int:
    request = urllib.request.Request(
        f"{api_url.rstrip('/')}/repos/{repository}/dispatches", data=json.dumps(body).encode(), method="POST",
        headers={"Accept": "application/vnd.github+json", "Authorization": f"Bearer {token}",
                 "X-GitHub-Api-Version": "2022-11-28", "Content-Type": "application/json",
                 "User-Agent": "product-classifier-retrain-relay"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        raise RelayError(f"GitHub answered {exc.code} to the dispatch for {repository}") from None
    except (urllib.error.URLError, TimeoutError) as exc:
        raise RelayError(f"GitHub API unreachable at {api_url}: {getattr(exc, 'reason', exc)}") from None


def make_handler(api_url: str, repository: str, token: str, event_type: str, secret: str):
    expected = f"Bearer {secret}".encode()
    dispatched = Dispatched()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: dict, headers: dict | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802 (http.server's naming)
            if self.path == "/health":
                return self._answer(200, {"status": "ok", "repository": repository})
            self._answer(404, {"detail": "not found"})

        def do_POST(self):  # noqa: N802
            if self.path != "/alert":
                return self._answer(404, {"detail": "not found"})
            given = self.headers.get("Authorization", "").encode("latin-1", "replace")
            if not hmac.compare_digest(given, expected):  # before the body is read
                self.close_connection = True
                return self._answer(401, {"detail": "missing or wrong relay secret"}, {"WWW-Authenticate": "Bearer"})
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY:
                return self._answer(400, {"detail": f"body must be 1 to {MAX_BODY} bytes of JSON"})
            try:
                webhook = json.loads(self.rfile.read(length))
                payloads = dispatch_payloads(webhook, event_type)
            except (ValueError, AttributeError, TypeError):
                return self._answer(400, {"detail": "not an Alertmanager webhook message"})
            sent = repeated = 0
            for body in payloads:
                key = alert_key(body)
                if not dispatched.claim(key):
                    repeated += 1
                    log.info("%s (fingerprint %s, since %s) already dispatched: skipped",
                             body["client_payload"]["alertname"], *key)
                    continue
                try:
                    post_dispatch(api_url, repository, token, body)
                except RelayError as exc:
                    dispatched.release(key)  # Alertmanager retries: the alert is sent then
                    log.error("%s", exc)
                    return self._answer(HTTPStatus.BAD_GATEWAY, {"detail": str(exc)})
                sent += 1
                log.info("dispatched %s for %s (model %s)", event_type, body["client_payload"]["alertname"],
                         body["client_payload"]["model_version"])
            self._answer(200, {"dispatched": sent, "already_dispatched": repeated})

        def log_message(self, format, *args):  # noqa: A002 - requests are logged by do_POST, without bodies
            log.debug(format, *args)

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=os.environ.get("RELAY_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("RELAY_PORT", "9095")))
    parser.add_argument("--repository", default=os.environ.get("GITHUB_REPOSITORY"))
    parser.add_argument("--api-url", default=os.environ.get("GITHUB_API_URL", "https://api.github.com"))
    parser.add_argument("--event-type", default=os.environ.get("RETRAIN_EVENT_TYPE", DEFAULT_EVENT_TYPE))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if not args.repository or "/" not in args.repository:
            raise RelayError("set GITHUB_REPOSITORY to owner/name")
        token = github_token()
        secret = relay_secret()
    except (RelayError, OSError) as exc:
        raise SystemExit(f"relay: {exc}") from None
    server = ThreadingHTTPServer((args.host, args.port), make_handler(args.api_url, args.repository, token,
                                                                      args.event_type, secret))
    log.info("relaying Alertmanager webhooks on http://%s:%d/alert to %s (%s)", args.host, args.port,
             args.repository, args.event_type)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
