from django.urls import include, path

from . import views

app_name = "console"
urlpatterns = [
    path("", views.home, name="home"),
    path("exceptions/", views.exceptions, name="exceptions"),
    path("records/<int:pk>/", views.record_detail, name="record"),
    path("records/<int:pk>/action/", views.record_action, name="record_action"),
    path("records/<int:pk>/desk/", views.record_desk_action, name="record_desk"),
    path("records/<int:pk>/freshness/", views.record_freshness, name="record_freshness"),
    path("search/", views.search, name="search"),
    path("runs/", views.runs, name="runs"),
    path("events/", views.events, name="events"),
    # screens owned by their own modules
    path("", include("apps.console.urls_boards")),
    path("", include("apps.console.urls_bulk")),
    path("", include("apps.console.urls_finance")),
]
