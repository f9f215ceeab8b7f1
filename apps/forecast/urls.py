from django.urls import path

from . import views

app_name = "forecast"
urlpatterns = [
    path("refresh/", views.refresh_now, name="refresh"),
]
