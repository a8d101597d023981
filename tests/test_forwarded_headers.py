"""Forwarded headers are trusted only from the proxy. The web Pod runs Daphne with --proxy-headers (it takes
the client's address from X-Forwarded-For) and its NetworkPolicy admits the ingress controller alone to that
port, so only the proxy can set it; where Daphne faces clients itself (`make run`, and these tests) the header is
ignored: a client that forges one is still counted as itself, here by the login throttle."""
from __future__ import annotations

import re

import pytest
import requests
import yaml

from .conftest import ROOT, free_port, service_env

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_forged_x_forwarded_for_does_not_escape_the_login_throttle(processes, media_root, owner):
    from axes.models import AccessAttempt

    port = free_port()
    processes.web(service_env(media_root), port)
    base = f"http://127.0.0.1:{port}"
    session = requests.Session()
    answers = []
    for i in range(6):  # each failure claims to come from somewhere else
        form = session.get(f"{base}/login/", timeout=10).text
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
        answers.append(session.post(f"{base}/login/", data={"username": owner.username, "password": "wrong",
                                                            "csrfmiddlewaretoken": token},
                                    headers={"X-Forwarded-For": f"198.51.100.{i}", "Referer": f"{base}/login/",
                                             "X-Real-IP": f"198.51.100.{i}"}, timeout=10).status_code)
    assert answers[:4] == [200] * 4 and answers[4:] == [429, 429], answers
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"127.0.0.1"}


def test_the_web_pod_trusts_forwarded_headers_behind_the_ingress_only():
    web = next(doc for doc in yaml.safe_load_all((ROOT / "k8s" / "base" / "web.yaml").read_text())
               if doc and doc["kind"] == "Deployment")
    command = web["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--proxy-headers" in command
    # Which peers reach that port is tests/test_k8s_manifests.py's
    # test_network_policies_deny_by_default_and_allow_what_g_edge_needs: the ingress controller (and Prometheus
    # for /metrics), nothing else in or outside the namespace.
