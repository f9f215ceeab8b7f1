from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The demo firm: its book of business, its set-up and its live traffic (`manage.py demo_setup`,
    `manage.py demo_traffic`). Never imported by the product; it drives it from outside, through the sandboxes and
    the real callbacks."""

    name = "apps.demo"
    label = "demo"
