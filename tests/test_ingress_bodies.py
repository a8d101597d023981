"""The ingress's body rules, for real: nginx (what ingress-nginx runs) in front of a real Daphne with the rules of
k8s/base/ingress.yaml (9 MiB bodies everywhere; the classic upload's large body only after the web's
/api/auth/check/ said the client is signed in). An anonymous 600 MB body, to any URL, is refused by nginx on
its Content-Length before it reaches the web, whose memory stays flat; a signed-in classic upload passes."""
from __future__ import annotations

import shutil

import pytest
import requests

from .conftest import free_port, make_video, service_env, token_for, wait_for_port
from .test_downloads import rss_mb

pytestmark = pytest.mark.django_db(transaction=True)
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

CONF = """
daemon off; worker_processes 1; pid {dir}/nginx.pid; error_log {dir}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off; client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/f; uwsgi_temp_path {dir}/u; scgi_temp_path {dir}/s;
  upstream web {{ server 127.0.0.1:{web}; }}
  server {{
    listen 127.0.0.1:{port};
    client_max_body_size 9m;                    # nginx.ingress.kubernetes.io/proxy-body-size on "gedge"
    location / {{ proxy_pass http://web; proxy_set_header Host $host; }}
    location = /api/jobs/ {{                      # the "gedge-upload" Ingress
      client_max_body_size 2049m;
      proxy_request_buffering off;
      auth_request /_auth;                       # nginx.ingress.kubernetes.io/auth-url
      proxy_pass http://web; proxy_set_header Host $host;
    }}
    location = /_auth {{                          # as ingress-nginx makes it: the body stays with nginx
      internal;
      client_max_body_size 2049m;
      proxy_pass http://web/api/auth/check/;
      proxy_pass_request_body off; proxy_set_header Content-Length ""; proxy_set_header Host $host;
    }}
  }}
}}
"""


def test_nginx_in_front_keeps_large_anonymous_bodies_off_the_web(processes, media_root, owner, tmp_path):
    if not shutil.which("nginx") and not shutil.which(NGINX):
        pytest.fail("nginx is missing: `apt-get install -y nginx-light` (make test installs it)")
    web_port, port = free_port(), free_port()
    web = processes.web(service_env(media_root, GEDGE_MAX_UPLOAD_BYTES=50_000_000), web_port)
    (tmp_path / "nginx").mkdir()
    conf = tmp_path / "nginx" / "nginx.conf"
    conf.write_text(CONF.format(dir=tmp_path / "nginx", web=web_port, port=port))
    processes.start("nginx", [NGINX, "-c", str(conf), "-p", str(tmp_path / "nginx")], {})
    wait_for_port(port)
    base = f"http://127.0.0.1:{port}"
    assert requests.get(f"{base}/healthz", timeout=10).status_code == 200
    before = rss_mb(web.pid)

    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:
        fh.truncate(600 * 1024 * 1024)  # sparse: 600 MB without writing them
    for url in ("/healthz", "/api/jobs/", "/login/"):
        with open(big, "rb") as fh:
            try:
                answer = requests.post(base + url, data=fh, timeout=60).status_code
            except requests.ConnectionError:  # nginx may answer and close while the client still sends
                answer = "closed"
        assert answer in (401, 403, 413, "closed"), (url, answer)
    assert rss_mb(web.pid) - before < 20, "the web process never held those bodies"

    # A signed-in user's classic upload gets through, past the 9 MiB of every other body.
    video = make_video(tmp_path / "small.mp4", frames=3)
    with open(video, "rb") as fh:
        response = requests.post(f"{base}/api/jobs/", files={"video": fh}, timeout=30,
                                 headers={"Authorization": f"Token {token_for(owner)}"})
    assert response.status_code == 201, response.text
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\1" * 12_000_000)  # 12 MB: over 9 MiB, so only the upload route lets it through
    with open(junk, "rb") as fh:
        response = requests.post(f"{base}/api/jobs/", files={"video": fh}, timeout=60,
                                 headers={"Authorization": f"Token {token_for(owner)}"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "not_a_video"
