"""An in-memory OCI distribution registry (the calls a push makes) with Basic or bearer-token auth, on loopback.

For the unit tests of lft_trainer.storage.oci's auth and retries; the real registry (distribution v3) is
tests/integration/test_adapter_oci.py's. Not a registry: no GET of manifests, no chunked uploads, no deletes.

    with FakeRegistry(auth="bearer", users={"u": "p"}) as reg:   # reg.host: 127.0.0.1:PORT
        ...; reg.blobs, reg.manifests, reg.requests
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN = "tok-" + uuid.uuid4().hex


class FakeRegistry:
    def __init__(self, auth: str | None = None, users: dict[str, str] | None = None, fail_first: int = 0,
                 fail_status: int = 503):
        self.auth, self.users = auth, users or {}
        self.fail_first, self.fail_status = fail_first, fail_status  # the first N requests answer fail_status
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, tuple[str, bytes]] = {}  # tag -> (content type, body)
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Authorization)
        self.token_requests: list[dict[str, list[str]]] = []
        self._uploads: dict[str, bool] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.host = f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FakeRegistry":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _authorized(self, header: str | None) -> bool:
        if self.auth is None:
            return True
        if self.auth == "bearer":
            return header == f"Bearer {TOKEN}"
        return header is not None and header.startswith("Basic ") and self._basic_ok(header)

    def _basic_ok(self, header: str) -> bool:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return self.users.get(user) == password

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        reg = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _route(self) -> None:
                url = urlsplit(self.path)
                auth = self.headers.get("Authorization")
                if url.path == "/token":
                    reg.token_requests.append(parse_qs(url.query))
                    if reg.users and not (auth and auth.startswith("Basic ") and reg._basic_ok(auth)):
                        return self._answer(401)
                    return self._answer(200, json.dumps({"token": TOKEN}).encode())
                reg.requests.append((self.command, url.path, auth))
                body = self._body() if self.command in ("PUT", "POST") else b""
                if reg.fail_first > 0:
                    reg.fail_first -= 1
                    return self._answer(reg.fail_status)
                if not reg._authorized(auth):
                    challenge = (f'Bearer realm="http://{reg.host}/token",service="fake",scope="repository:x:pull"'
                                 if reg.auth == "bearer" else 'Basic realm="fake"')
                    return self._answer(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {"WWW-Authenticate": challenge})
                self._serve(url.path, parse_qs(url.query), body)

            def _serve(self, path: str, query: dict[str, list[str]], body: bytes) -> None:
                if m := re.fullmatch(r"/v2/(.+)/blobs/(sha256:[0-9a-f]{64})", path):
                    return self._answer(200 if m.group(2) in reg.blobs else 404)
                if re.fullmatch(r"/v2/(.+)/blobs/uploads/", path) and self.command == "POST":
                    upload = uuid.uuid4().hex
                    reg._uploads[upload] = True
                    return self._answer(202, headers={"Location": f"{path}{upload}?state=x"})
                if (m := re.fullmatch(r"/v2/(.+)/blobs/uploads/([0-9a-f]+)", path)) and self.command == "PUT":
                    digest = query["digest"][0]
                    if "sha256:" + hashlib.sha256(body).hexdigest() != digest or m.group(2) not in reg._uploads:
                        return self._answer(400, b'{"errors":[{"code":"DIGEST_INVALID"}]}')
                    reg.blobs[digest] = body
                    return self._answer(201, headers={"Docker-Content-Digest": digest})
                if (m := re.fullmatch(r"/v2/(.+)/manifests/([^/]+)", path)) and self.command == "PUT":
                    manifest = json.loads(body)
                    missing = [d["digest"] for d in [manifest["config"], *manifest["layers"]]
                               if d["digest"] not in reg.blobs]
                    if missing:
                        return self._answer(400, b'{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN"}]}')
                    reg.manifests[m.group(2)] = (self.headers.get("Content-Type", ""), body)
                    return self._answer(201, headers={"Docker-Content-Digest": "sha256:" + hashlib.sha256(body).hexdigest()})
                self._answer(404, b'{"errors":[{"code":"NAME_UNKNOWN"}]}')

            do_GET = do_HEAD = do_POST = do_PUT = _route

        return Handler
