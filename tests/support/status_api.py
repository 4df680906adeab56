"""A stand-in for the Kubernetes API server's status subresource: records the merge patches it gets."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer


class StatusApi:
    """HTTP on loopback; `.url` for KubeStatusClient / LFT_KUBE_API_URL; `.seen`: [(path, headers, body)]."""

    def __init__(self) -> None:
        seen: list[tuple[str, dict, dict]] = []
        self.seen = seen

        class Handler(BaseHTTPRequestHandler):
            def do_PATCH(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                seen.append((self.path, dict(self.headers), json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *a):
                pass

        self._server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def bodies(self) -> list[dict]:
        return [body for _, _, body in self.seen]

    def stop(self) -> None:
        self._server.shutdown()
