"""Create the first admin account if there is none, and say how to log in."""
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from gedge_site.envconf import env_str


class Command(BaseCommand):
    help = "Create an admin user (GEDGE_ADMIN_USER / GEDGE_ADMIN_PASSWORD) when no superuser exists."

    def handle(self, **options):
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write("admin account exists (reset with: python manage.py changepassword USER)\n")
            return
        username = settings.GEDGE_ADMIN_USER
        password = env_str("GEDGE_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        self.stdout.write(f"admin account created: log in at http://127.0.0.1:8000/login/ as "
                          f"'{username}' with password '{password}'\n")
