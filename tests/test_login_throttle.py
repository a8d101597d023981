"""Login throttling (django-axes): failed logins per user name and address lock that pair out for a cool-off,
on every login path, with a clear page; a correct password works again once the cool-off has passed."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from .conftest import PASSWORD

pytestmark = pytest.mark.django_db
LOGIN_PATHS = ["/login/", "/admin/login/"]


def attempt(client, path: str, username: str, password: str, address: str = "203.0.113.7"):
    return client.post(path, {"username": username, "password": password}, REMOTE_ADDR=address)


@pytest.mark.parametrize("path", LOGIN_PATHS)
def test_the_sixth_bad_login_is_refused_until_the_cool_off_has_passed(client, django_user_model, path):
    from axes.models import AccessAttempt

    django_user_model.objects.create_user("owner", password=PASSWORD, is_staff=True)  # staff: the admin login
    assert settings.AXES_FAILURE_LIMIT == 5
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        response = attempt(client, path, "owner", "wrong")
        assert response.status_code == 200 and "_auth_user_id" not in client.session  # the form again
    locked = attempt(client, path, "owner", "wrong")  # the 5th failure locks
    assert locked.status_code == 429
    # Now even the right password is refused, with a page that says why and what to do.
    refused = attempt(client, path, "owner", PASSWORD)
    assert refused.status_code == 429 and "_auth_user_id" not in client.session
    page = refused.content.decode()
    assert "Too many failed logins" in page and "Try again in 0:15:00" in page and "axes_reset" in page
    # Other pairs are not locked: another address for this user, another user from this address.
    assert attempt(client, path, "owner", PASSWORD, address="198.51.100.9").status_code == 302
    client.logout()
    django_user_model.objects.create_user("other", password=PASSWORD, is_staff=True)
    assert attempt(client, path, "other", PASSWORD).status_code == 302
    client.logout()
    # After the cool-off the right password works, and the count starts again.
    AccessAttempt.objects.update(attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1))
    welcomed = attempt(client, path, "owner", PASSWORD)
    assert welcomed.status_code == 302 and client.session["_auth_user_id"] == str(
        django_user_model.objects.get(username="owner").pk)


def test_a_locked_out_user_keeps_a_token_and_an_existing_session(client, django_user_model):
    """Throttling guards password guessing only: API tokens and sessions already open are not passwords."""
    from rest_framework.test import APIClient

    from .conftest import token_for

    user = django_user_model.objects.create_user("owner", password=PASSWORD)
    client.force_login(user)
    other = client.__class__()
    for _ in range(settings.AXES_FAILURE_LIMIT + 1):
        attempt(other, "/login/", "owner", "wrong")
    assert attempt(other, "/login/", "owner", PASSWORD).status_code == 429
    assert client.get("/api/jobs/").status_code == 200
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    assert api.get("/api/jobs/").status_code == 200
