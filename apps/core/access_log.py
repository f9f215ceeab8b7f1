"""gunicorn's access log (`--logger-class` in the Procfile) without the secret in a Salesforce callback URL
(/api/v1/callbacks/<slug>/<secret>/, apps/sync/callback_secrets.py): a log line is read by more people, and kept
longer, than the secret may be. Imports nothing from Django: gunicorn loads it before the application."""

import re

from gunicorn.glogging import Logger

SECRET_IN_PATH = re.compile(r"(/api/v1/callbacks/[^/?\s]+/)[^/?\s]+")


def without_url_secret(text: str) -> str:
    return SECRET_IN_PATH.sub(r"\1[redacted]", text)


class AccessLogger(Logger):
    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        # every atom: the request line and path, but also the referrer and environ atoms such as {raw_uri}e
        return {key: without_url_secret(value) if isinstance(value, str) else value for key, value in atoms.items()}
