from django.apps import AppConfig


class ReconcileConfig(AppConfig):
    name = "apps.reconcile"
    label = "reconcile"
    verbose_name = "Reconciliation (delivered vs billed vs recognised)"
