from django.apps import AppConfig


class FaultLabConfig(AppConfig):
    name = "faultlab"
    verbose_name = "G-Edge fault run (tests only)"
