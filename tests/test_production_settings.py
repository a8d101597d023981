"""Production settings (REDIS_URL set): Django's deployment checks pass with no warning, HTTPS is enforced
behind the ingress (TLS ends there; the Pods speak HTTP) except on the probe and scrape paths, the switches
for plain-HTTP runs (the test suite, the bench) turn off what they name, and the example Secret's values are
refused at start. Each case runs Django in a subprocess with an environment built from nothing, so the test
run's own switches (Makefile TEST_ENV) do not leak in.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT

EXAMPLE_SECRET = yaml.safe_load((ROOT / "k8s" / "extras" / "secret.example.yaml").read_text())["stringData"]
TEST_SWITCHES = {"GEDGE_SECURE_SSL_REDIRECT": "false", "GEDGE_SECURE_COOKIES": "false"}
HOST = "gedge.example.com"

# Runs inside the subprocess: the settings as Django sees them, and what the test client gets back.
PROBE = r"""
import json
import django
from django.conf import settings
from django.test import Client

django.setup()
client = Client()

def answer(path, host="gedge.example.com", **headers):
    response = client.get(path, headers={"Host": host, **headers})
    return {"status": response.status_code, "location": response.get("Location"),
            "hsts": response.get("Strict-Transport-Security"), "nosniff": response.get("X-Content-Type-Options"),
            "cookies": {name: bool(morsel["secure"]) for name, morsel in response.cookies.items()}}

names = ["SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS",
         "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_PROXY_SSL_HEADER", "SECURE_CONTENT_TYPE_NOSNIFF",
         "SECURE_REDIRECT_EXEMPT", "SILENCED_SYSTEM_CHECKS"]
print(json.dumps({
    "settings": {name: getattr(settings, name) for name in names},
    "login_http": answer("/login/"),
    "login_https": answer("/login/", **{"X-Forwarded-Proto": "https"}),
    # The kubelet's probes (Host: localhost) and Prometheus scrape over plain HTTP inside the cluster.
    "exempt": {path: answer(path, host="localhost") for path in ("/healthz", "/readyz", "/metrics")},
}))
"""


def production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "gedge_site.settings",
        "DATABASE_URL": os.environ["DATABASE_URL"],
        "REDIS_URL": os.environ["REDIS_URL"],
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": f"{HOST},localhost",
        "DJANGO_DEBUG": "false",
        "GEDGE_DB_POOL": "false",  # the probe's /readyz and /metrics connect once; no pool to wait for
        "GEDGE_VAR_DIR": str(tmp_path / "var"),
        "GEDGE_MEDIA_ROOT": str(tmp_path / "media"),
        "GEDGE_LOG_LEVEL": "ERROR",
    }
    env.update(extra)
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def probe(env: dict[str, str]) -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_deploy_checks_pass_with_no_warning(tmp_path):
    result = manage(production_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNINGS" not in result.stderr and "?: (security." not in result.stderr, result.stderr
    # Only W021 (HSTS preload) is silenced: see the comment at SILENCED_SYSTEM_CHECKS in settings.py.
    assert "System check identified no issues (1 silenced)." in result.stdout, result.stdout


def test_production_enforces_https_behind_the_ingress(tmp_path):
    seen = probe(production_env(tmp_path))
    values = seen["settings"]
    assert values["SESSION_COOKIE_SECURE"] is True and values["CSRF_COOKIE_SECURE"] is True
    assert values["SECURE_SSL_REDIRECT"] is True and values["SECURE_CONTENT_TYPE_NOSNIFF"] is True
    assert values["SECURE_HSTS_SECONDS"] >= 365 * 24 * 3600 and values["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True
    assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert values["SILENCED_SYSTEM_CHECKS"] == ["security.W021"]
    # Plain HTTP from outside is sent to HTTPS ...
    assert seen["login_http"]["status"] == 301 and seen["login_http"]["location"] == f"https://{HOST}/login/"
    # ... what the ingress forwards as HTTPS is served, with HSTS, nosniff and Secure cookies.
    https = seen["login_https"]
    assert https["status"] == 200, https
    assert https["hsts"] == "max-age=31536000; includeSubDomains" and https["nosniff"] == "nosniff"
    assert https["cookies"] == {"csrftoken": True}
    # Probes and scrapes over plain HTTP are answered, not redirected.
    for path, answer in seen["exempt"].items():
        assert answer["status"] != 301 and answer["location"] is None, (path, answer)
    assert seen["exempt"]["/healthz"]["status"] == 200


def test_the_plain_http_switches_turn_redirect_and_secure_cookies_off(tmp_path):
    seen = probe(production_env(tmp_path, **TEST_SWITCHES))
    values = seen["settings"]
    assert values["SECURE_SSL_REDIRECT"] is False
    assert values["SESSION_COOKIE_SECURE"] is False and values["CSRF_COOKIE_SECURE"] is False
    plain = seen["login_http"]
    assert plain["status"] == 200 and plain["location"] is None, plain
    assert plain["cookies"] == {"csrftoken": False}, "a cookie a browser on http:// would not send back"
    assert plain["hsts"] is None  # HSTS is only ever sent on HTTPS responses
    # The rest of production's hardening stays.
    assert values["SECURE_HSTS_SECONDS"] >= 365 * 24 * 3600 and values["SECURE_CONTENT_TYPE_NOSNIFF"] is True
    # Each is its own switch: HSTS and the proxy header can be turned off too.
    values = probe(production_env(tmp_path, GEDGE_SECURE_HSTS_SECONDS="0",
                                  GEDGE_SECURE_PROXY_SSL_HEADER="false"))["settings"]
    assert values["SECURE_HSTS_SECONDS"] == 0 and values["SECURE_PROXY_SSL_HEADER"] is None
    assert values["SECURE_SSL_REDIRECT"] is True


def test_embedded_defaults_stay_plain_http(tmp_path):
    env = production_env(tmp_path)
    for name in ("REDIS_URL", "DATABASE_URL", "DJANGO_SECRET_KEY"):
        del env[name]
    values = probe(env)["settings"]
    assert values["SECURE_SSL_REDIRECT"] is False and values["SECURE_HSTS_SECONDS"] == 0
    assert values["SESSION_COOKIE_SECURE"] is False and values["CSRF_COOKIE_SECURE"] is False
    assert values["SECURE_PROXY_SSL_HEADER"] is None


@pytest.mark.parametrize("case", ["example", "example-as-file", "short"])
def test_production_refuses_the_example_or_a_short_secret_key(tmp_path, case):
    if case == "short":
        env = production_env(tmp_path, DJANGO_SECRET_KEY="x" * 49)
    else:
        env = production_env(tmp_path, DJANGO_SECRET_KEY=EXAMPLE_SECRET["DJANGO_SECRET_KEY"])
    if case == "example-as-file":  # how the Pods read it: k8s mounts the Secret as files
        key_file = tmp_path / "DJANGO_SECRET_KEY"
        key_file.write_text(env.pop("DJANGO_SECRET_KEY") + "\n")
        env["DJANGO_SECRET_KEY_FILE"] = str(key_file)
    result = manage(env, "check")
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "DJANGO_SECRET_KEY" in result.stderr
    assert "secrets.token_urlsafe(50)" in result.stderr, "the message says how to make a good one"
    assert ("example" if case != "short" else "50 characters") in result.stderr.split("ImproperlyConfigured")[-1]


def test_any_setting_can_be_read_from_a_file_and_both_set_is_refused(tmp_path, monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    from gedge_site.envconf import env_bool, env_int, env_str

    (tmp_path / "url").write_text("  redis://:s3cret@redis:6379/0\n")
    (tmp_path / "n").write_text("42\n")
    (tmp_path / "flag").write_text("false")
    for name in ("GEDGE_T_URL", "GEDGE_T_N", "GEDGE_T_FLAG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GEDGE_T_URL_FILE", str(tmp_path / "url"))
    monkeypatch.setenv("GEDGE_T_N_FILE", str(tmp_path / "n"))
    monkeypatch.setenv("GEDGE_T_FLAG_FILE", str(tmp_path / "flag"))
    assert env_str("GEDGE_T_URL") == "redis://:s3cret@redis:6379/0"  # stripped, as a Secret's file may end in \n
    assert env_int("GEDGE_T_N", 0) == 42 and env_bool("GEDGE_T_FLAG", True) is False
    assert env_str("GEDGE_T_UNSET", "default") == "default"
    monkeypatch.setenv("GEDGE_T_URL", "redis://elsewhere")
    with pytest.raises(ImproperlyConfigured, match="both GEDGE_T_URL and GEDGE_T_URL_FILE are set"):
        env_str("GEDGE_T_URL")
    monkeypatch.delenv("GEDGE_T_URL")
    monkeypatch.setenv("GEDGE_T_URL_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="GEDGE_T_URL_FILE=.*cannot be read"):
        env_str("GEDGE_T_URL")


def test_production_reads_its_secrets_from_files(tmp_path):
    """How the Pods get them (k8s: the Secret mounted as files, NAME_FILE in the ConfigMap)."""
    env = production_env(tmp_path)
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    for name in ("DJANGO_SECRET_KEY", "DATABASE_URL", "REDIS_URL"):
        (secrets_dir / name).write_text(env.pop(name) + "\n")
        env[f"{name}_FILE"] = str(secrets_dir / name)
    result = manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    code = ("import django; django.setup(); from django.conf import settings; "
            "print(settings.SECRET_KEY, settings.REDIS_URL, settings.DATABASES['default']['NAME'])")
    shown = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=120)
    assert shown.returncode == 0, shown.stderr
    key, redis_url, db_name = shown.stdout.split()
    assert key == (secrets_dir / "DJANGO_SECRET_KEY").read_text().strip() and redis_url == os.environ["REDIS_URL"]
    assert db_name == os.environ["DATABASE_URL"].rsplit("/", 1)[-1]
