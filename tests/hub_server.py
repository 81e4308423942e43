"""A stand-in for the Hugging Face Hub on loopback: the API and resolve routes huggingface_hub calls, with the
headers it reads, over repositories held in memory, so that the real client library resolves, downloads and
caches against it (HF_ENDPOINT).

    GET  /api/models/{repo}[/revision/{rev}]        model_info: {"id", "sha", "siblings"}
    GET  /api/models/{repo}/tree/{rev}?recursive=1  list_repo_tree: [{"type", "path", "size", "oid"}]
    HEAD /{repo}/resolve/{rev}/{path}               X-Repo-Commit, ETag, Content-Length
    GET  /{repo}/resolve/{rev}/{path}               the bytes (a Range's tail when asked)

Errors carry the X-Error-Code that huggingface_hub turns into its exceptions: RepoNotFound, GatedRepo (401),
RevisionNotFound, EntryNotFound.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


@dataclass
class Repo:
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> path -> content
    gated: bool = False


class FakeHub:
    """Repositories by "org/name"; `requests` logs (method, path) of every request; `cut[path]`: how many more
    times that file is sent half-way and the connection dropped (a network cut mid-file); `delay`: seconds
    before a file's bytes are sent (a slow download)."""

    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.cut: dict[str, int] = {}
        self.delay = 0.0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def push(self, repo: str, files: dict[str, bytes], revision: str = "main", gated: bool = False) -> str:
        """Commit `files` (the whole tree) to `repo` at branch or tag `revision`; returns the commit hash."""
        r = self.repos.setdefault(repo, Repo())
        r.gated = gated
        h = hashlib.sha1(repo.encode())
        for path in sorted(files):
            h.update(path.encode() + hashlib.sha256(files[path]).digest())
        commit = h.hexdigest()
        r.commits[commit], r.refs[revision] = dict(files), commit
        return commit

    def downloads(self) -> list[str]:
        """The repository paths fetched with GET, in order."""
        return [p.split("/resolve/", 1)[1].split("/", 1)[1] for m, p in self.requests
                if m == "GET" and "/resolve/" in p]

    def __enter__(self) -> FakeHub:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/(?P<route>revision|tree)/(?P<rev>[^/]+)(?P<path>/.*)?)?$")
RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_HEAD(self):
            self._answer(body=False)

        def do_GET(self):
            self._answer(body=True)

        def _answer(self, body: bool):
            path = unquote(urlsplit(self.path).path)
            hub.requests.append((self.command, path))
            if m := API.match(path):
                self._api(m)
            elif m := RESOLVE.match(path):
                self._resolve(m, body)
            else:
                self._error(404, "RepoNotFound")

        def _commit(self, m) -> tuple[Repo, str] | None:
            repo = hub.repos.get(m["repo"])
            if repo is None:
                self._error(401, "RepoNotFound")  # what the Hub answers for a missing or private repository
                return None
            rev = unquote(m["rev"] or "main")
            commit = rev if rev in repo.commits else repo.refs.get(rev)
            if commit is None:
                self._error(404, "RevisionNotFound")
                return None
            return repo, commit

        def _api(self, m):
            if (found := self._commit(m)) is None:
                return
            repo, commit = found
            files = repo.commits[commit]
            if m["route"] == "tree":
                entries = [{"type": "file", "path": p, "size": len(files[p]),
                            "oid": hashlib.sha1(files[p]).hexdigest()} for p in sorted(files)]
                return self._json(entries)
            self._json({"id": m["repo"], "sha": commit, "private": False, "gated": "auto" if repo.gated else False,
                        "siblings": [{"rfilename": p} for p in sorted(files)]})

        def _resolve(self, m, body: bool):
            if (found := self._commit(m)) is None:
                return
            repo, commit = found
            if repo.gated:
                return self._error(401, "GatedRepo")
            data = repo.commits[commit].get(m["path"])
            if data is None:
                return self._error(404, "EntryNotFound")
            start = int(re.match(r"bytes=(\d+)-", self.headers.get("Range", "bytes=0-"))[1])
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            if not body:
                return
            time.sleep(hub.delay)
            if hub.cut.get(m["path"], 0) > 0:
                hub.cut[m["path"]] -= 1
                self.wfile.write(data[start:start + (len(data) - start) // 2])
                self.wfile.flush()
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(2)
                return
            self.wfile.write(data[start:])

        def _json(self, value):
            data = json.dumps(value).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(data)

        def _error(self, status: int, code: str):
            data = json.dumps({"error": code}).encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(data)

    return Handler
