"""Secrets encrypted at rest: model fields that keep a Fernet token (cryptography's AES-128-CBC + HMAC-SHA256,
authenticated) in the database and give the decrypted value to Python, so readers use `connection.credentials`
as before. Keys come from HANDOFF_SECRET_KEYS (newest first): the newest encrypts, every listed key decrypts, and
`manage.py rotate_secret_keys` re-encrypts every stored value with the newest (docs/operations.md).

An empty value is stored empty: "no secret" is not a secret, and `filter(inbound_secret="")` keeps working.
Serialisation (dumpdata) and model forms see the token, never the plaintext (`value_from_object`)."""

from __future__ import annotations

import json

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models


class SecretUnreadable(Exception):
    """A stored secret that none of the configured keys decrypts: the key that encrypted it was dropped too early."""


def keys() -> MultiFernet:
    """Built on each use (cheap) so a changed setting — a deploy, or a test's override — applies at once."""
    listed = settings.HANDOFF_SECRET_KEYS
    if not listed:
        raise ImproperlyConfigured("HANDOFF_SECRET_KEYS is empty: secrets cannot be encrypted or read")
    try:
        return MultiFernet([Fernet(key) for key in listed])
    except ValueError as exc:
        raise ImproperlyConfigured(f"HANDOFF_SECRET_KEYS holds a key that is not a Fernet key ({exc})") from None


UNREADABLE = "a stored secret is not readable with any key in HANDOFF_SECRET_KEYS"


def encrypt(plaintext: str) -> str:
    return keys().encrypt(plaintext.encode()).decode("ascii")


def decrypt(token: str) -> str:
    try:
        return keys().decrypt(token.encode("ascii")).decode()
    except (InvalidToken, UnicodeEncodeError):
        raise SecretUnreadable(UNREADABLE) from None


def rotate(token: str) -> str:
    """The same secret under the newest key (MultiFernet.rotate: decrypt with any key, encrypt with the first)."""
    try:
        return keys().rotate(token.encode("ascii")).decode("ascii")
    except (InvalidToken, UnicodeEncodeError):
        raise SecretUnreadable(UNREADABLE) from None


class EncryptedField(models.TextField):
    """Base: how a Python value becomes the plaintext that is encrypted (`dump`) and back (`load`)."""

    def empty(self):
        return ""

    def dump(self, value) -> str:
        return str(value)

    def load(self, text: str):
        return text

    def from_db_value(self, value, expression, connection):
        if value is None or value == "":
            return self.empty()
        return self.load(decrypt(value))

    def to_python(self, value):
        """Deserialisation (loaddata) and form cleaning: a token from a dump is decrypted; a plain value is kept."""
        if isinstance(value, str) and value:
            try:
                return self.load(decrypt(value))
            except SecretUnreadable:
                return self.load_plain(value)
        return self.empty() if value is None else value

    def load_plain(self, value: str):
        return value

    def get_prep_value(self, value):
        if value is None or value == self.empty() or value == "":
            return ""
        return encrypt(self.dump(value))

    def value_from_object(self, obj):
        return self.get_prep_value(super().value_from_object(obj))


class EncryptedTextField(EncryptedField):
    """A secret string (a webhook signing secret, a client secret)."""


class EncryptedJSONField(EncryptedField):
    """A JSON object of secrets (outbound credentials: access and refresh tokens, keys)."""

    def empty(self):
        return {}

    def dump(self, value) -> str:
        return json.dumps(value, sort_keys=True)

    def load(self, text: str):
        return json.loads(text)

    def load_plain(self, value: str):
        return json.loads(value)


def encrypted_fields():
    """Every (model, field) that keeps a secret: what rotation walks through."""
    from django.apps import apps

    return [(model, field) for model in apps.get_models() for field in model._meta.concrete_fields
            if isinstance(field, EncryptedField)]
