"""A small Hugging Face Hub on 127.0.0.1 for tests: the parts of the API huggingface_hub uses.

Serves generated repos from memory: model info by revision, recursive tree listing, file
resolve (HEAD and GET, with Range for resumed downloads), model listing with author / search /
filter, and the Hub's error codes (404 RepoNotFound / RevisionNotFound / EntryNotFound, 401
GatedRepo). A repo's sha is the hash of its files, so it is stable while they are unchanged.
``cut_after`` makes the first GET of a file stop after that many bytes, like a dropped link.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse


@dataclass
class Repo:
    files: dict[str, bytes]
    tags: list[str] = field(default_factory=list)
    gated: bool | str = False  # True: 401 without a token; "denied": 403 with any token

    @property
    def sha(self) -> str:
        h = hashlib.sha1()
        for name in sorted(self.files):
            h.update(name.encode() + b"\0" + hashlib.sha1(self.files[name]).digest())
        return h.hexdigest()


class FakeHub:
    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.log: list[tuple[str, str, dict]] = []  # (method, path, selected headers)
        self.cut_after: dict[str, int] = {}  # file path -> bytes before the first GET stops
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub._handle(self, head=True)

            def do_GET(self):
                hub._handle(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ responses
    def _send(self, h, status, body=b"", headers=None, head=False):
        headers = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        h.send_response(status)
        headers.setdefault("Content-Length", str(len(body)))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        if not head and body:
            h.wfile.write(body)

    def _error(self, h, status, code, message, head=False):
        self._send(h, status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message}, head)

    def _repo(self, h, repo_id, head=False):
        repo = self.repos.get(repo_id)
        if repo is None:
            self._error(h, 404, "RepoNotFound", f"Repository {repo_id} not found", head)
            return None
        if repo.gated == "denied":  # a token without access to the gated repo: the Hub answers 403
            self._error(h, 403, "GatedRepo", f"Access to model {repo_id} is restricted and you are not in the "
                        "authorized list", head)
            return None
        if repo.gated and "authorization" not in {k.lower() for k in h.headers.keys()}:
            self._error(h, 401, "GatedRepo", f"Access to model {repo_id} is restricted", head)
            return None
        return repo

    def _revision_ok(self, repo, rev):
        return rev in ("main", repo.sha)

    def _handle(self, h, head):
        url = urlparse(h.path)
        path = unquote(url.path)
        with self._lock:
            self.log.append((h.command, path, {k: v for k, v in h.headers.items() if k.lower() == "range"}))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) == 2:
            q = parse_qs(url.query)
            out = []
            for rid, repo in sorted(self.repos.items()):
                if "author" in q and not rid.startswith(q["author"][0] + "/"):
                    continue
                if "search" in q and q["search"][0].lower() not in rid.lower():
                    continue
                if "filter" in q and not set(q["filter"]) <= set(repo.tags):
                    continue
                out.append({"id": rid, "modelId": rid, "sha": repo.sha, "tags": repo.tags})
            if "limit" in q:
                out = out[: int(q["limit"][0])]
            return self._send(h, 200, out, head=head)
        if parts[:2] == ["api", "models"] and (len(parts) == 4 or (len(parts) >= 5 and parts[4] in ("revision", "tree"))):
            repo_id = "/".join(parts[2:4])
            kind, rev = (parts[4], parts[5] if len(parts) > 5 else "main") if len(parts) > 4 else ("revision", "main")
            repo = self._repo(h, repo_id, head)
            if repo is None:
                return
            if not self._revision_ok(repo, rev):
                return self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
            if kind == "revision":
                return self._send(h, 200, {"id": repo_id, "modelId": repo_id, "sha": repo.sha, "private": False,
                                           "gated": "manual" if repo.gated else False, "tags": repo.tags,
                                           "siblings": [{"rfilename": n} for n in sorted(repo.files)]}, head=head)
            return self._send(h, 200, [{"type": "file", "path": n, "size": len(b),
                                        "oid": hashlib.sha1(b).hexdigest()} for n, b in sorted(repo.files.items())],
                              head=head)
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id, rev, fname = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            repo = self._repo(h, repo_id, head)
            if repo is None:
                return
            if not self._revision_ok(repo, rev):
                return self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
            if fname not in repo.files:
                return self._error(h, 404, "EntryNotFound", f"{fname} does not exist", head)
            data = repo.files[fname]
            headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                       "Accept-Ranges": "bytes"}
            start = 0
            rng = h.headers.get("Range")
            if rng and rng.startswith("bytes=") and not head:
                start = int(rng[6:].split("-")[0])
            body = data[start:]
            status = 206 if start else 200
            if start:
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            headers["Content-Length"] = str(len(body))
            if head:
                return self._send(h, 200, b"", {**headers, "Content-Length": str(len(data))}, head=True)
            cut = self.cut_after.pop(f"{repo_id}/{fname}", None)
            if cut is not None:
                h.send_response(status)
                for k, v in headers.items():
                    h.send_header(k, v)
                h.end_headers()
                h.wfile.write(body[:cut])
                h.wfile.flush()
                h.close_connection = True
                return
            return self._send(h, status, body, headers)
        self._send(h, 404, {"error": "not found"}, {"X-Error-Code": "EntryNotFound"}, head)
