"""A session ends a working day after login (SESSION_COOKIE_AGE) or after HANDOFF_SESSION_IDLE_SECONDS without a
request, whichever comes first. Django's expiry alone does one or the other: it is renewed whenever the session is
saved, and saving it on every request (for the idle limit) would also renew the working-day limit."""

import time

from django.conf import settings
from django.contrib.auth import logout

STARTED, SEEN = "handoff_session_started", "handoff_session_seen"
SEEN_RESOLUTION = 60  # seconds: write the session at most once a minute, not on every request


class SessionLimitsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.user.is_authenticated:
            now = int(time.time())
            started = request.session.setdefault(STARTED, now)
            seen = request.session.get(SEEN, now)
            if now - started > settings.SESSION_COOKIE_AGE or now - seen > settings.HANDOFF_SESSION_IDLE_SECONDS:
                logout(request)  # anonymous from here on: LoginRequiredMiddleware sends the person to the login page
            elif now - seen >= SEEN_RESOLUTION or SEEN not in request.session:
                request.session[SEEN] = now
        return self.get_response(request)
