"""What the gateway, the one service on the internet, shows of itself without a key.

- /metrics is served on METRICS_PORT only (gunicorn listens there too; Knative's queue-proxy
  forwards only the API port), and that port serves nothing else; on the API port it is 404, as
  for a path that does not exist, also when no METRICS_PORT is given. Services that are not public
  keep /metrics on their one port.
- /openapi.json names PUBLIC_URL as its server, or `/`; never what a request's Host header says.
- The live page runs only its own inline script and style, may not be framed and sends no Referer.
"""
from __future__ import annotations

import base64
import hashlib
import re
import runpy

import pytest
from flask import Response

import functions.common.gunicorn_conf as gunicorn_conf
from functions.bot_manager import create_app as create_bot_manager
from functions.common.settings import Settings
from functions.gateway import create_app as create_gateway
from functions.gateway.headers import add_security_headers
from functions.gateway.streams import LIVE_PAGE
from tests.support.stacks import IN_PROCESS_SECRETS

METRICS_PORT = 9102


def gateway(**settings: str):
    return create_gateway(Settings.from_env({**IN_PROCESS_SECRETS, **settings}))


def test_gateway_metrics_are_on_the_metrics_port_only(monkeypatch):
    monkeypatch.setenv("METRICS_PORT", str(METRICS_PORT))
    client = gateway().test_client()
    on_metrics_port = f"http://localhost:{METRICS_PORT}"
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", base_url="http://gateway.example.com:8080").status_code == 404
    scraped = client.get("/metrics", base_url=on_metrics_port)
    assert scraped.status_code == 200 and "vexa_http_requests_total" in scraped.get_data(as_text=True)
    # Nothing but /metrics there: no API that would bypass Knative's queue-proxy.
    for path in ("/healthz", "/livez", "/openapi.json", "/live", "/bot/status/alice", "/admin/users/alice"):
        assert client.get(path, base_url=on_metrics_port).status_code == 404, path


def test_the_gateway_serves_no_metrics_without_a_metrics_port(monkeypatch):
    monkeypatch.delenv("METRICS_PORT", raising=False)
    response = gateway().test_client().get("/metrics")
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"


def test_other_services_keep_metrics_on_their_port(monkeypatch):
    monkeypatch.delenv("METRICS_PORT", raising=False)
    assert create_bot_manager(Settings.from_env(IN_PROCESS_SECRETS)).test_client().get("/metrics").status_code == 200


def test_gunicorn_listens_on_the_metrics_port_too(monkeypatch):
    monkeypatch.setenv("PORT", "8080")
    monkeypatch.delenv("HOST", raising=False)
    monkeypatch.delenv("METRICS_PORT", raising=False)
    assert runpy.run_path(gunicorn_conf.__file__)["bind"] == ["0.0.0.0:8080"]
    monkeypatch.setenv("METRICS_PORT", str(METRICS_PORT))
    assert runpy.run_path(gunicorn_conf.__file__)["bind"] == ["0.0.0.0:8080", f"0.0.0.0:{METRICS_PORT}"]


def test_the_document_never_names_the_requests_host():
    client = gateway().test_client()
    document = client.get("/openapi.json", headers={"Host": "attacker.example", "X-Forwarded-Host": "attacker.example"})
    assert document.get_json()["servers"] == [{"url": "/"}]
    configured = gateway(PUBLIC_URL="https://api.example.com/").test_client()
    assert configured.get("/openapi.json", headers={"Host": "attacker.example"}).get_json()["servers"] == [
        {"url": "https://api.example.com"}
    ]


@pytest.mark.parametrize("url", ["api.example.com", "javascript:alert(1)", "https://", "https://u:p@api.example.com",
                                 "https://api.example.com/?x=1"])  # fmt: skip
def test_a_public_url_that_is_not_one_stops_the_gateway(url):
    with pytest.raises(ValueError, match="PUBLIC_URL"):
        gateway(PUBLIC_URL=url)


def _sha256(text: str) -> str:
    return f"'sha256-{base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()}'"


def test_the_live_page_runs_only_its_own_code_and_is_not_framed():
    response = gateway().test_client().get("/live?user=alice&meeting=standup")
    html = LIVE_PAGE.read_text()
    (script,) = re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    (style,) = re.findall(r"<style>(.*?)</style>", html, re.DOTALL)
    policy = dict(part.strip().split(" ", 1) for part in response.headers["Content-Security-Policy"].split(";"))
    assert policy == {
        "default-src": "'none'",
        "script-src": _sha256(script),
        "style-src": _sha256(style),
        "connect-src": "'self'",  # the page's fetch and EventSource, to this gateway only
        "base-uri": "'none'",
        "form-action": "'none'",
        "frame-ancestors": "'none'",
    }
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-cache"  # no user data in it; revalidated, so a new version shows


def test_a_view_that_sets_its_own_caching_keeps_it():
    """The SSE stream says `no-cache` itself (functions/gateway/streams.py)."""
    stream = add_security_headers(Response("", headers={"Cache-Control": "no-cache"}))
    assert stream.headers["Cache-Control"] == "no-cache" and stream.headers["X-Content-Type-Options"] == "nosniff"
