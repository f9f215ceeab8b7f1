"""Boards, KPIs, connections, manual runs and the audit export (views in boards.py). Included by urls.py under
the console namespace."""

from django.urls import path

from . import boards

urlpatterns = [
    path("boards/", boards.board, name="boards"),
    path("kpis/", boards.kpi_page, name="kpis"),
    path("kpis/export.csv", boards.kpi_export, name="kpis_export"),
    path("runs/manual/", boards.manual_run, name="runs_manual"),
    path("connections/", boards.connections, name="connections"),
    path("connections/<int:pk>/pause/", boards.connection_pause, name="connection_pause"),
    path("connections/<int:pk>/resume/", boards.connection_resume, name="connection_resume"),
    path("connections/<int:pk>/rotate-secret/", boards.connection_rotate_secret, name="connection_rotate_secret"),
    path("audit/export.csv", boards.audit_export, name="audit_export"),
]
