"""Login throttling: django-axes' check in front of the password backend (settings.py, AXES_*)."""
from __future__ import annotations

from axes.backends import AxesStandaloneBackend


class LoginThrottleBackend(AxesStandaloneBackend):
    """Axes' lockout check for every authentication that comes with a request: the login pages (/login/,
    /admin/login/) and any DRF authentication by password pass theirs. An authentication without a request is
    no login over HTTP (Django's test client's ``login()``, a script): axes would raise; it is not throttled."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)
