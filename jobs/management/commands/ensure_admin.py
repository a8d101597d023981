"""Create the first admin account if there is none, and say how to log in."""
import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from gedge_site.envconf import env_str, is_example_value


class Command(BaseCommand):
    help = ("Create an admin user (GEDGE_ADMIN_USER / GEDGE_ADMIN_PASSWORD or GEDGE_ADMIN_PASSWORD_FILE) when no "
            "superuser exists. A generated password is printed once; a given one never is.")

    def handle(self, **options):
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write("admin account exists (reset with: python manage.py changepassword USER)\n")
            return
        username = settings.GEDGE_ADMIN_USER
        given = env_str("GEDGE_ADMIN_PASSWORD")
        if is_example_value(given):
            raise CommandError("GEDGE_ADMIN_PASSWORD is the example value of k8s/extras/secret.example.yaml, which "
                               "anyone can read: set your own in the Secret, or unset it and a random password is "
                               "generated and printed once (docs/deploy.md, \"Secrets\")")
        password = given or secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        if given:  # the operator knows it; printing it would put it in terminals, CI logs and kubectl's output
            source = "GEDGE_ADMIN_PASSWORD_FILE" if os.environ.get("GEDGE_ADMIN_PASSWORD_FILE") else \
                "GEDGE_ADMIN_PASSWORD"
            self.stdout.write(f"admin account created: log in at /login/ as '{username}' with the password "
                              f"from {source}\n")
        else:
            self.stdout.write(f"admin account created: log in at http://127.0.0.1:8000/login/ as "
                              f"'{username}' with password '{password}' (shown once: note it now, change it with "
                              f"python manage.py changepassword {username})\n")
