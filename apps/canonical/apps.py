from django.apps import AppConfig


class CanonicalConfig(AppConfig):
    name = "apps.canonical"
    label = "canonical"
