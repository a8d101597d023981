"""Django admin for jobs, and the commands `make run` relies on."""
from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest
import yaml
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from jobs.lifecycle.services import submit_job
from jobs.lifecycle.transitions import transition
from jobs.models import Status

from .conftest import MODEL, PASSWORD, ROOT, make_video


@pytest.fixture
def failed_job(owner, tmp_path, redis_clean):
    path = make_video(tmp_path / "clip.mp4", frames=3)
    job, _ = submit_job(owner, SimpleUploadedFile("clip.mp4", path.read_bytes()))
    transition(job.pk, Status.ENQUEUE, Status.PREPROCESSING)
    return transition(job.pk, Status.PREPROCESSING, Status.FAILED,
                      fields={"error": "decoder blew up", "failed_stage": "preprocess"})


@pytest.mark.django_db
def test_admin_lists_filters_and_shows_history(client, django_user_model, failed_job):
    django_user_model.objects.create_superuser("root", password=PASSWORD)
    client.login(username="root", password=PASSWORD)
    page = client.get("/admin/jobs/job/?status__exact=Failed&q=clip").content.decode()
    assert "clip.mp4" in page and "Failed" in page and "<progress" in page
    detail = client.get(f"/admin/jobs/job/{failed_job.pk}/change/").content.decode()
    assert "decoder blew up" in detail and "Preprocessing" in detail  # the event history inline


@pytest.mark.django_db
def test_admin_retry_and_cancel_actions(client, django_user_model, failed_job, owner, tmp_path):
    django_user_model.objects.create_superuser("root", password=PASSWORD)
    client.login(username="root", password=PASSWORD)
    response = client.post("/admin/jobs/job/", {"action": "retry_selected", "_selected_action": [failed_job.pk]},
                           follow=True)
    assert "Retried 1 job" in response.content.decode()
    failed_job.refresh_from_db()
    assert failed_job.status == Status.ENQUEUE and failed_job.error == "decoder blew up"  # reason kept
    client.post("/admin/jobs/job/", {"action": "cancel_selected", "_selected_action": [failed_job.pk]})
    failed_job.refresh_from_db()
    assert failed_job.status == Status.CANCELLED
    response = client.post("/admin/jobs/job/", {"action": "cancel_selected",
                                                "_selected_action": [failed_job.pk]}, follow=True)
    assert "cannot be cancelled" in response.content.decode()


def test_fetch_model_checks_the_hash(tmp_path, settings):
    settings.GEDGE_MODEL_PATH = str(tmp_path / "models" / "yolox_nano.onnx")
    with pytest.raises(CommandError, match="No detection model"):
        call_command("fetch_model", "--check")
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not the model")
    with pytest.raises(CommandError) as refused:
        call_command("fetch_model", "--from", str(bogus))
    message = str(refused.value)
    assert "4903c9058f6e2553834e9905be1ae5d67e262cb6321964dbc57a49edc6fa10da" in message  # expected
    import hashlib

    actual = hashlib.sha256(b"not the model").hexdigest()
    assert actual in message and f"--accept-sha256 {actual}" in message
    out = io.StringIO()
    call_command("fetch_model", "--from", str(MODEL), stdout=out)
    assert "model installed" in out.getvalue()
    assert (tmp_path / "models" / "yolox_nano.onnx").read_bytes() == MODEL.read_bytes()


def test_fetch_model_without_a_terminal_or_network_says_what_to_do(tmp_path):
    env = {"GEDGE_MODEL_PATH": str(tmp_path / "m.onnx"), "PATH": "/usr/bin:/bin", "GEDGE_VAR_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "manage.py", "fetch_model"], cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert result.returncode != 0
    assert "GEDGE_MODEL_PATH" in result.stderr and "fetch_model --from" in result.stderr


@pytest.mark.django_db
def test_ensure_admin_creates_one_account_once(monkeypatch):
    from django.contrib.auth import get_user_model

    monkeypatch.delenv("GEDGE_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("GEDGE_ADMIN_PASSWORD_FILE", raising=False)
    out = io.StringIO()
    call_command("ensure_admin", stdout=out)
    # A generated password is shown once: that is how the operator learns it.
    printed = re.search(r"with password '([^']+)'", out.getvalue())
    assert "admin account created" in out.getvalue() and printed, out.getvalue()
    assert get_user_model().objects.get(is_superuser=True).check_password(printed.group(1))
    call_command("ensure_admin", stdout=out)
    assert "admin account exists" in out.getvalue()
    assert get_user_model().objects.filter(is_superuser=True).count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("source", ["GEDGE_ADMIN_PASSWORD", "GEDGE_ADMIN_PASSWORD_FILE"])
def test_ensure_admin_never_echoes_a_password_it_was_given(monkeypatch, tmp_path, source):
    from django.contrib.auth import get_user_model

    given = "operator-chosen-Password-42"
    monkeypatch.delenv("GEDGE_ADMIN_PASSWORD", raising=False)
    if source == "GEDGE_ADMIN_PASSWORD_FILE":  # how a Pod gets it: the Secret mounted as files
        (tmp_path / "pw").write_text(given + "\n")
        monkeypatch.setenv("GEDGE_ADMIN_PASSWORD_FILE", str(tmp_path / "pw"))
    else:
        monkeypatch.setenv("GEDGE_ADMIN_PASSWORD", given)
    out, err = io.StringIO(), io.StringIO()
    call_command("ensure_admin", stdout=out, stderr=err)
    assert "admin account created" in out.getvalue() and source in out.getvalue()  # says where it came from
    assert given not in out.getvalue() + err.getvalue()  # never in a terminal, a CI log or kubectl's output
    assert get_user_model().objects.get(is_superuser=True).check_password(given)


@pytest.mark.django_db
def test_ensure_admin_refuses_the_example_secret_s_password(monkeypatch):
    from django.contrib.auth import get_user_model

    example = yaml.safe_load((ROOT / "k8s" / "extras" / "secret.example.yaml").read_text())["stringData"]
    monkeypatch.delenv("GEDGE_ADMIN_PASSWORD_FILE", raising=False)
    monkeypatch.setenv("GEDGE_ADMIN_PASSWORD", example["GEDGE_ADMIN_PASSWORD"])
    with pytest.raises(CommandError, match="GEDGE_ADMIN_PASSWORD is the example value") as refused:
        call_command("ensure_admin", stdout=io.StringIO())
    assert "unset it" in str(refused.value)  # says what to do
    assert not get_user_model().objects.filter(is_superuser=True).exists()
