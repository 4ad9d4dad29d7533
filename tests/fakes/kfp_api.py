"""A loopback stub of the KFP v2 REST API (``/apis/v2beta1``), recording request bodies.

It answers what ``kfp.Client`` and the ``kfp`` CLI call to submit a run or a
recurring run: healthz, experiment lookup by name (the ``filter`` predicate)
and creation, run and recurring-run creation and lookup. It checks nothing a
real backend checks (the pipeline spec is not compiled to Argo, parameters are
not validated against it): a contract test of what the client sends, not a
stand-in for a cluster.
"""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

PREFIX = "/apis/v2beta1"
#: The CLI prints creation times, so every object carries one.
CREATED = "2026-01-05T03:00:00Z"


class KfpApiStub:
    """``with KfpApiStub() as api: kfp.Client(host=api.url)``; ``api.requests`` holds the calls."""

    def __init__(self):
        self.requests: list[dict] = []
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.recurring_runs: dict[str, dict] = {}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                url = urlparse(self.path)
                stub.requests.append(
                    {"method": "GET", "path": url.path, "query": parse_qs(url.query)}
                )
                code, body = stub.get(url.path, parse_qs(url.query))
                self._reply(code, body)

            def do_DELETE(self):  # noqa: N802
                url = urlparse(self.path)
                stub.requests.append({"method": "DELETE", "path": url.path})
                removed = stub.recurring_runs.pop(url.path.rsplit("/", 1)[1], None)
                self._reply(200 if removed else 404, {} if removed else {"error": "not found"})

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                stub.requests.append({"method": "POST", "path": self.path, "body": body})
                code, reply = stub.post(urlparse(self.path).path, body)
                self._reply(code, reply)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def get(self, path: str, query: dict) -> tuple[int, dict]:
        if path == f"{PREFIX}/healthz":
            return 200, {"multi_user": False}
        if path == f"{PREFIX}/experiments":
            names = [
                p.get("string_value", p.get("stringValue"))
                for p in json.loads(query.get("filter", ["{}"])[0]).get("predicates", [])
            ]
            hits = [e for e in self.experiments.values() if e["display_name"] in names]
            return 200, ({"experiments": hits, "total_size": len(hits)} if hits else {})
        if path == f"{PREFIX}/recurringruns":
            exp = query.get("experiment_id", [None])[0]
            hits = [
                r
                for r in self.recurring_runs.values()
                if exp is None or r.get("experiment_id") == exp
            ]
            return 200, ({"recurringRuns": hits, "total_size": len(hits)} if hits else {})
        for kind, table in (
            ("experiments", self.experiments),
            ("runs", self.runs),
            ("recurringruns", self.recurring_runs),
        ):
            if path.startswith(f"{PREFIX}/{kind}/"):
                item = table.get(path.rsplit("/", 1)[1])
                return (200, item) if item else (404, {"error": "not found", "code": 5})
        return 404, {"error": f"no route {path}", "code": 5}

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        new_id = str(uuid.uuid4())
        if path == f"{PREFIX}/experiments":
            self.experiments[new_id] = {
                **body,
                "experiment_id": new_id,
                "storage_state": "AVAILABLE",
                "created_at": CREATED,
                "last_run_created_at": CREATED,
            }
            return 200, self.experiments[new_id]
        if path == f"{PREFIX}/runs":
            self.runs[new_id] = {
                **body,
                "run_id": new_id,
                "state": "PENDING",
                "created_at": CREATED,
                "scheduled_at": CREATED,
            }
            return 200, self.runs[new_id]
        if path == f"{PREFIX}/recurringruns":
            status = "ENABLED" if body.get("mode") == "ENABLE" else "DISABLED"
            self.recurring_runs[new_id] = {
                **body,
                "recurring_run_id": new_id,
                "status": status,
                "created_at": CREATED,
                "updated_at": CREATED,
            }
            return 200, self.recurring_runs[new_id]
        return 404, {"error": f"no route {path}", "code": 5}

    def posted(self, path_suffix: str) -> list[dict]:
        """Bodies of the POST requests to ``/apis/v2beta1/<path_suffix>``."""
        return [
            r["body"]
            for r in self.requests
            if r["method"] == "POST" and r["path"] == f"{PREFIX}/{path_suffix}"
        ]

    def __enter__(self) -> KfpApiStub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
