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
        for key in ("r", "U", "f"):  # the request line, the path, the referrer
            if isinstance(atoms.get(key), str):
                atoms[key] = without_url_secret(atoms[key])
        return atoms
