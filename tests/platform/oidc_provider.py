"""A tiny OpenID Connect provider for the SSO tests, served over real HTTP on localhost: discovery, authorize
(redirects straight back with a code for whoever `person` says), token (an RS256 ID token signed with a key made
here), JWKS and userinfo (with the groups claim). Faults to test refusals: `sign_with` another key, `nonce` and
`audience` overrides."""

from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

KID = "test-key-1"
CLIENT_ID = "handoff-test"


def new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Provider:
    def __init__(self):
        self.key = new_key()
        self.sign_with = self.key
        self.person: dict = {}
        self.nonce: str | None = None  # set: the ID token carries this nonce instead of the one asked for
        self.audience = CLIENT_ID
        self.codes: dict[str, dict] = {}
        self.tokens: dict[str, dict] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    @property
    def discovery(self) -> str:
        return self.url + "/.well-known/openid-configuration"

    def id_token(self, nonce: str, person: dict) -> str:
        now = int(time.time())
        claims = {"iss": self.url, "aud": self.audience, "sub": person["sub"], "iat": now, "exp": now + 300,
                  "nonce": self.nonce if self.nonce is not None else nonce, "email": person["email"],
                  "email_verified": True}
        return jwt.encode(claims, self.sign_with, algorithm="RS256", headers={"kid": KID})

    def handler(self):
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, status: int, body: dict | None = None, headers: dict | None = None):
                data = json.dumps(body or {}).encode()
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/.well-known/openid-configuration":
                    return self.answer(200, {"issuer": provider.url,
                                             "authorization_endpoint": provider.url + "/authorize",
                                             "token_endpoint": provider.url + "/token",
                                             "userinfo_endpoint": provider.url + "/userinfo",
                                             "jwks_uri": provider.url + "/jwks"})
                if url.path == "/jwks":
                    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(provider.key.public_key(), as_dict=True)
                    return self.answer(200, {"keys": [{**jwk, "kid": KID, "alg": "RS256", "use": "sig"}]})
                if url.path == "/authorize":
                    assert query["client_id"] == CLIENT_ID and query["response_type"] == "code"
                    code = secrets.token_urlsafe(16)
                    provider.codes[code] = {"nonce": query.get("nonce", ""), "person": dict(provider.person)}
                    back = query["redirect_uri"] + "?" + urlencode({"code": code, "state": query["state"]})
                    return self.answer(302, headers={"Location": back})
                if url.path == "/userinfo":
                    token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    person = provider.tokens.get(token)
                    return self.answer(200, person) if person else self.answer(401, {"error": "invalid_token"})
                return self.answer(404)

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                form = {k: v[0] for k, v in parse_qs(body).items()}
                grant = provider.codes.pop(form.get("code", ""), None)
                if self.path != "/token" or grant is None or form.get("client_id") != CLIENT_ID:
                    return self.answer(400, {"error": "invalid_grant"})
                access = secrets.token_urlsafe(16)
                provider.tokens[access] = grant["person"]
                return self.answer(200, {"access_token": access, "token_type": "Bearer", "expires_in": 300,
                                         "id_token": provider.id_token(grant["nonce"], grant["person"])})

        return Handler
