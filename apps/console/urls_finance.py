from django.urls import path

from . import finance

urlpatterns = [
    path("finance/", finance.finance_console, name="finance"),
    path("engagements/<str:code>/", finance.engagement_detail, name="engagement"),
]
