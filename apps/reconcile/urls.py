from django.urls import path

from . import views

app_name = "reconcile"
urlpatterns = [
    path("reconciliation/", views.report, name="report"),
    path("reconciliation/export.csv", views.export, name="export"),
    path("reconciliation/run/", views.run_now, name="run"),
]
