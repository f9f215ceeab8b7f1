from django.contrib.auth.decorators import login_not_required
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView

from apps.core.csp import third_party

from . import views

app_name = "api"
# The API authenticates itself (DRF: session or basic auth; callbacks: the sender's signature)
urlpatterns = [
    path("callbacks/<str:connection>/", login_not_required(views.CallbackView.as_view()), name="callback"),
    path("callbacks/<str:connection>/<str:secret>/", login_not_required(views.SecretCallbackView.as_view()),
         name="callback_secret_url"),
    path("records/", login_not_required(views.RecordList.as_view()), name="records"),
    path("records/<int:pk>/", login_not_required(views.RecordDetail.as_view()), name="record"),
    path("events/", login_not_required(views.EventList.as_view()), name="events"),
    path("schema/", login_not_required(SpectacularAPIView.as_view()), name="schema"),
    # Redoc's template runs inline scripts: this page alone gets the third-party policy (config/urls.py)
    path("docs/", third_party(SpectacularRedocView.as_view(url_name="api:schema")), name="docs"),
]
