"""A loopback fake of the Hugging Face Hub HTTP endpoints, for offline tests.

It keeps repos in memory (``{repo_id: {path: bytes}}``) with a commit history
per repo, and answers what ``huggingface_hub`` calls to download
(``HEAD``/``GET /<repo>/resolve/<rev>/<path>``, ``GET /api/models/<repo>``) and
to publish: ``POST /api/repos/create``, ``/api/validate-yaml``,
``/api/models/<repo>/preupload/<rev>``, the git-LFS batch API with a
pre-signed-style ``PUT`` (clients must run with ``HF_HUB_DISABLE_XET=1``) and
the ndjson ``/api/models/<repo>/commit/<rev>``. Like the real Hub, preupload
returns each existing file's oid, so an unchanged upload makes no commit.

With ``token=`` set, every API call without ``Authorization: Bearer <token>``
gets the Hub's 401. Every request is recorded in ``requests`` (method, path,
Authorization header, body) for assertions.

What it does not model: Xet storage, permissions beyond one token,
organisations, branches other than ``main``, and the Hub's full YAML schema.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

import yaml

#: The Hub's message for a bad token; huggingface_hub keys its error mapping on it.
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub stores files above 10 MB with LFS


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """Start with ``with FakeHub() as hub:``; ``hub.url`` is the endpoint."""

    def __init__(self, token: str | None = None):
        self.repos: dict[str, dict[str, bytes]] = {}
        self.lfs_files: dict[str, dict[str, bool]] = {}  # repo → {path: stored with LFS}
        self.commits: dict[str, str] = {}  # repo → head commit sha
        self.history: dict[str, list[dict]] = {}  # repo → commits, oldest first
        self.lfs_objects: dict[str, bytes] = {}  # sha256 → bytes
        self.requests: list[dict] = []
        self.token = token
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add_file(self, repo_id: str, path: str, data: bytes) -> None:
        """Put a file in a repo directly (one commit per call)."""
        self._commit(repo_id, f"add {path}", {path: data}, [])

    def _commit(
        self,
        repo_id: str,
        message: str,
        files: dict[str, bytes],
        deleted: list[str],
        lfs: dict[str, bool] | None = None,
    ) -> str:
        repo = self.repos.setdefault(repo_id, {})
        repo.update(files)
        for path in deleted:
            repo.pop(path, None)
        kinds = self.lfs_files.setdefault(repo_id, {})
        kinds.update({p: (lfs or {}).get(p, False) for p in files})
        parent = self.commits.get(repo_id, "")
        state = json.dumps(
            [parent, message, sorted((p, git_blob_sha1(d)) for p, d in repo.items())]
        )
        sha = hashlib.sha1(state.encode()).hexdigest()
        self.commits[repo_id] = sha
        self.history.setdefault(repo_id, []).append(
            {"sha": sha, "message": message, "files": sorted(files), "deleted": sorted(deleted)}
        )
        return sha

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

            def _body(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _record(self, body: bytes = b""):
                hub.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "auth": self.headers.get("Authorization"),
                        "body": body,
                    }
                )

            def _unauthorized(self) -> bool:
                if hub.token and self.headers.get("Authorization") != f"Bearer {hub.token}":
                    self._json(401, {"error": INVALID_CREDENTIALS})
                    return True
                return False

            def _send(
                self, code, body=b"", ctype="application/octet-stream", headers=None, head=False
            ):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _json(self, code, obj, headers=None):
                self._send(code, json.dumps(obj).encode(), "application/json", headers)

            # ---- downloads ----
            def _resolve(self, head: bool):
                # /<org>/<name>/resolve/<rev>/<path>
                parts = unquote(urlparse(self.path).path).strip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return self._send(404, b"not found", head=head)
                repo_id, path = "/".join(parts[:2]), "/".join(parts[4:])
                if repo_id not in hub.repos:
                    return self._send(
                        401, b"repo not found", headers={"X-Error-Code": "RepoNotFound"}, head=head
                    )
                files = hub.repos[repo_id]
                if path not in files:
                    return self._send(
                        404,
                        b"entry not found",
                        headers={"X-Error-Code": "EntryNotFound"},
                        head=head,
                    )
                data = files[path]
                etag = '"' + hashlib.sha1(data).hexdigest() + '"'
                self._send(
                    200,
                    data,
                    head=head,
                    headers={"X-Repo-Commit": hub.commits[repo_id], "ETag": etag},
                )

            def _model_info(self, repo_id: str):
                if repo_id not in hub.repos:
                    return self._json(
                        404,
                        {"error": "Repository not found"},
                        headers={"X-Error-Code": "RepoNotFound"},
                    )
                self._json(
                    200,
                    {
                        "id": repo_id,
                        "modelId": repo_id,
                        "sha": hub.commits[repo_id],
                        "private": False,
                        "siblings": [{"rfilename": p} for p in sorted(hub.repos[repo_id])],
                    },
                )

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
                    return self._model_info("/".join(path[len("/api/models/") :].split("/")[:2]))
                self._resolve(head=False)

            # ---- uploads ----
            def do_PUT(self):
                # The LFS upload href stands for a pre-signed storage URL: no Hub token.
                body = self._body()
                self._record(body)
                path = urlparse(self.path).path
                if not path.startswith("/lfs-upload/"):
                    return self._send(404, b"not found")
                oid = path.rsplit("/", 1)[1]
                if hashlib.sha256(body).hexdigest() != oid:
                    return self._json(400, {"error": "sha256 mismatch"})
                hub.lfs_objects[oid] = body
                self._send(200)

            def do_POST(self):
                body = self._body()
                self._record(body)
                path = unquote(urlparse(self.path).path)
                if path == "/lfs-verify":
                    oid = json.loads(body)["oid"]
                    return self._json(200 if oid in hub.lfs_objects else 404, {})
                if self._unauthorized():
                    return
                if path == "/api/repos/create":
                    return self._create_repo(json.loads(body))
                if path == "/api/validate-yaml":
                    return self._validate_yaml(json.loads(body)["content"])
                if path.endswith(".git/info/lfs/objects/batch"):
                    return self._lfs_batch(json.loads(body))
                parts = path.strip("/").split("/")
                if len(parts) >= 6 and parts[:2] == ["api", "models"]:
                    repo_id, action = "/".join(parts[2:4]), parts[4]
                    if repo_id not in hub.repos:
                        return self._json(
                            404,
                            {"error": "Repository not found"},
                            headers={"X-Error-Code": "RepoNotFound"},
                        )
                    if action == "preupload":
                        return self._preupload(repo_id, json.loads(body))
                    if action == "commit":
                        return self._commit(repo_id, body)
                self._json(404, {"error": f"no route {path}"})

            def _create_repo(self, req: dict):
                repo_id = (
                    f"{req['organization']}/{req['name']}"
                    if req.get("organization")
                    else req["name"]
                )
                url = f"{hub.url}/{repo_id}"
                if repo_id in hub.repos:
                    return self._json(
                        409, {"error": "You already created this model repo", "url": url}
                    )
                # The real Hub starts every repo with a commit holding .gitattributes.
                hub._commit(
                    repo_id, "initial commit", {".gitattributes": b"*.bin filter=lfs\n"}, []
                )
                self._json(200, {"url": url, "name": repo_id})

            def _validate_yaml(self, content: str):
                errors = []
                if content.startswith("---"):
                    try:
                        meta = yaml.safe_load(content.split("---", 2)[1]) or {}
                    except yaml.YAMLError as e:
                        meta, errors = {}, [{"message": f"invalid YAML: {e}"}]
                    for entry in meta.get("model-index", []) or []:
                        if "name" not in entry:
                            errors.append({"message": "model-index entry without name"})
                        for r in entry.get("results", []):
                            if "type" not in r.get("task", {}) or "type" not in r.get(
                                "dataset", {}
                            ):
                                errors.append({"message": "result without task or dataset type"})
                            for m in r.get("metrics", []):
                                if "type" not in m or "value" not in m:
                                    errors.append({"message": "metric without type or value"})
                self._json(400 if errors else 200, {"errors": errors, "warnings": []})

            def _preupload(self, repo_id: str, req: dict):
                files = hub.repos[repo_id]
                out = []
                for f in req["files"]:
                    sample = base64.b64decode(f["sample"])
                    lfs = f["size"] > LFS_THRESHOLD or b"\0" in sample
                    oid = None
                    if f["path"] in files:
                        data = files[f["path"]]
                        oid = hashlib.sha256(data).hexdigest() if lfs else git_blob_sha1(data)
                    out.append(
                        {
                            "path": f["path"],
                            "uploadMode": "lfs" if lfs else "regular",
                            "shouldIgnore": False,
                            "oid": oid,
                        }
                    )
                self._json(200, {"files": out})

            def _lfs_batch(self, req: dict):
                objects = []
                for o in req["objects"]:
                    entry = {"oid": o["oid"], "size": o["size"]}
                    if o["oid"] not in hub.lfs_objects:  # already stored: nothing to send
                        entry["actions"] = {
                            "upload": {"href": f"{hub.url}/lfs-upload/{o['oid']}"},
                            "verify": {"href": f"{hub.url}/lfs-verify"},
                        }
                    objects.append(entry)
                self._json(200, {"transfer": "basic", "objects": objects})

            def _commit(self, repo_id: str, body: bytes):
                lines = [json.loads(x) for x in body.decode().splitlines() if x.strip()]
                header = next(x["value"] for x in lines if x["key"] == "header")
                files, lfs, deleted = {}, {}, []
                for x in lines:
                    v = x["value"]
                    if x["key"] == "file":
                        files[v["path"]] = base64.b64decode(v["content"])
                    elif x["key"] == "lfsFile":
                        if v["oid"] not in hub.lfs_objects:
                            return self._json(422, {"error": f"LFS object {v['oid']} missing"})
                        files[v["path"]] = hub.lfs_objects[v["oid"]]
                        lfs[v["path"]] = True
                    elif x["key"] == "deletedFile":
                        deleted.append(v["path"])
                sha = hub._commit(repo_id, header["summary"], files, deleted, lfs)
                self._json(
                    200,
                    {
                        "commitUrl": f"{hub.url}/{repo_id}/commit/{sha}",
                        "commitOid": sha,
                        "pullRequestUrl": None,
                    },
                )

        return Handler
