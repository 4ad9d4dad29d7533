"""A loopback fake of the Hugging Face Hub HTTP endpoints, for offline tests.

It stores repos in memory: ``{repo_id: {path: bytes}}`` with one commit sha per
repo and answers what ``huggingface_hub`` calls to download files
(``HEAD``/``GET /<repo>/resolve/<rev>/<path>``, ``GET /api/models/<repo>``).
Every request is recorded in ``server.requests`` for assertions.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


class FakeHub:
    """Start with ``with FakeHub() as hub:``; ``hub.url`` is the endpoint."""

    def __init__(self, token: str | None = None):
        self.repos: dict[str, dict[str, bytes]] = {}
        self.commits: dict[str, str] = {}
        self.requests: list[dict] = []
        self.token = token
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add_file(self, repo_id: str, path: str, data: bytes) -> None:
        self.repos.setdefault(repo_id, {})[path] = data
        digest = hashlib.sha1(repr(sorted(self.repos[repo_id].items())).encode()).hexdigest()
        self.commits[repo_id] = digest

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _record(self):
                hub.requests.append(
                    {"method": self.command, "path": self.path,
                     "auth": self.headers.get("Authorization")}
                )

            def _unauthorized(self) -> bool:
                if hub.token and self.headers.get("Authorization") != f"Bearer {hub.token}":
                    self._send(401, b'{"error": "Invalid credentials"}', "application/json")
                    return True
                return False

            def _send(self, code, body=b"", ctype="application/octet-stream", headers=None,
                      head=False):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _resolve(self, head: bool):
                # /<org>/<name>/resolve/<rev>/<path>
                parts = unquote(urlparse(self.path).path).strip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return self._send(404, b"not found", head=head)
                repo_id, path = "/".join(parts[:2]), "/".join(parts[4:])
                if repo_id not in hub.repos:
                    return self._send(401, b"repo not found", headers={"X-Error-Code": "RepoNotFound"}, head=head)
                files = hub.repos[repo_id]
                if path not in files:
                    return self._send(404, b"entry not found", headers={"X-Error-Code": "EntryNotFound"}, head=head)
                data = files[path]
                etag = '"' + hashlib.sha1(data).hexdigest() + '"'
                self._send(200, data, headers={"X-Repo-Commit": hub.commits[repo_id], "ETag": etag},
                           head=head)

            def do_HEAD(self):
                self._record()
                if self._unauthorized():
                    return
                self._resolve(head=True)

            def do_GET(self):
                self._record()
                if self._unauthorized():
                    return
                path = urlparse(self.path).path
                if path.startswith("/api/models/"):
                    repo_id = "/".join(path[len("/api/models/"):].split("/")[:2])
                    if repo_id not in hub.repos:
                        return self._send(404, b'{"error": "Repository not found"}', "application/json")
                    body = json.dumps({
                        "id": repo_id, "modelId": repo_id, "sha": hub.commits[repo_id],
                        "siblings": [{"rfilename": p} for p in sorted(hub.repos[repo_id])],
                    }).encode()
                    return self._send(200, body, "application/json")
                self._resolve(head=False)

        return Handler
