"""Production as the README describes it: the Procfile's release step, then the Procfile's web process, with the
production settings (everything from the environment). The release step prepares everything the web needs —
without collectstatic every page answered 500 — and every response carries the security headers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
import requests

from tests.faults.kit import ROOT, database_url_of_this_test, free_port, redis_url, wait_for

HOST = "handoff.example.com"


def procfile(name: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in (ROOT / "Procfile").read_text().splitlines()
                if line.startswith(f"{name}:"))


def production_env(tmp_path: Path) -> dict:
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "SECRET_KEY": "production-test-" + "k3y" * 20, "HANDOFF_SECRET_KEYS": Fernet.generate_key().decode(),
            "ALLOWED_HOSTS": HOST,
            "CSRF_TRUSTED_ORIGINS": f"https://{HOST}", "DATABASE_URL": database_url_of_this_test(),
            "REDIS_URL": redis_url(), "STATIC_ROOT": str(tmp_path / "static"), "LOG_LEVEL": "WARNING",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.fixture(scope="module")
def production(django_db_setup, django_db_blocker, tmp_path_factory):
    """The release step run as the Procfile says, then the web process; yields (base URL, headers to send)."""
    tmp = tmp_path_factory.mktemp("production")
    with django_db_blocker.unblock():
        env = production_env(tmp)
    release = subprocess.run(["/bin/sh", "-c", procfile("release")], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=300)
    assert release.returncode == 0, release.stdout[-2000:] + release.stderr[-2000:]
    port = free_port()
    log = open(tmp / "web.log", "wb")
    web = subprocess.Popen(["/bin/sh", "-c", "exec " + procfile("web")], cwd=ROOT, stdout=log,
                           stderr=subprocess.STDOUT, env={**env, "WEB_BIND": f"127.0.0.1:{port}",
                                                          "WEB_CONCURRENCY": "1"})
    url = f"http://127.0.0.1:{port}"
    # as behind the TLS-terminating proxy the production settings expect (SECURE_PROXY_SSL_HEADER)
    headers = {"Host": HOST, "X-Forwarded-Proto": "https"}

    def up():
        try:
            return requests.get(url + "/healthz", headers=headers, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for(up, timeout=60, what="the production web process")
        yield url, headers
    finally:
        web.terminate()
        web.wait(20)
        log.close()


def test_the_release_step_prepares_everything_the_pages_need(production):
    url, headers = production
    page = requests.get(url + "/login/", headers=headers, timeout=10)
    assert page.status_code == 200, page.text[:500]
    assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', page.text)
    assert any(a.endswith(".css") for a in assets) and any(a.endswith(".js") for a in assets), assets
    for asset in assets:  # hashed names from the manifest, served by WhiteNoise
        response = requests.get(url + asset, headers=headers, timeout=10)
        assert response.status_code == 200, asset
        assert re.search(r"\.[0-9a-f]{12}\.(css|js)$", asset), asset


def test_production_answers_with_the_security_headers(production):
    url, headers = production
    response = requests.get(url + "/login/", headers=headers, timeout=10)

    assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["X-Frame-Options"] == "DENY"
    csp = dict(d.strip().split(" ", 1) for d in response.headers["Content-Security-Policy"].split(";"))
    assert csp["script-src"] == "'self'" and csp["style-src"] == "'self'" and csp["default-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'" and csp["object-src"] == "'none'"
    assert "unsafe" not in response.headers["Content-Security-Policy"]
    # the page itself needs nothing the policy forbids: no inline script, handler or style
    assert not re.search(r"<script(?![^>]*\bsrc=)|\son[a-z]+=|\sstyle=|<style", response.text)
    [csrf_cookie] = [c for c in response.raw.headers.getlist("Set-Cookie") if c.startswith("csrftoken=")]
    assert "; Secure" in csrf_cookie and "; HttpOnly" in csrf_cookie, csrf_cookie
    # plain http is sent to https
    redirect = requests.get(url + "/login/", headers={"Host": HOST}, timeout=10, allow_redirects=False)
    assert redirect.status_code == 301 and redirect.headers["Location"] == f"https://{HOST}/login/"


def test_manage_py_check_deploy_is_clean(tmp_path):
    env = production_env(tmp_path)
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


@pytest.mark.django_db
def test_only_the_third_party_pages_may_run_inline_code(client, carol):
    client.force_login(carol)
    for ours in ("/", "/exceptions/", "/login/"):
        assert "unsafe" not in client.get(ours)["Content-Security-Policy"], ours
    for theirs in ("/api/v1/docs/", "/admin/rq/"):
        response = client.get(theirs)
        assert response.status_code == 200, theirs
        assert "script-src 'self' 'unsafe-inline'" in response["Content-Security-Policy"], theirs
