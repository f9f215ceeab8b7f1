from django.urls import path

from . import bulk_views

urlpatterns: list = [
    path("bulk/preview/", bulk_views.bulk_preview, name="bulk_preview"),
    path("bulk/<int:pk>/", bulk_views.bulk_detail, name="bulk"),
    path("bulk/<int:pk>/confirm/", bulk_views.bulk_confirm, name="bulk_confirm"),
]
