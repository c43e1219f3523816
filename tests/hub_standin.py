"""A stand-in of the Hugging Face Hub's HTTP API on 127.0.0.1, for tests: the calls that
`upload_folder` (create the repo, check the card's YAML, ask how to send each file, commit) and
`snapshot_download` (a revision, its file tree, each file) make, over repos it keeps in memory."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from contextlib import contextmanager
from typing import Iterator


class StandInHub(BaseHTTPRequestHandler):
    repos: dict[str, dict[str, bytes]] = {}  # repo id → its files at its one revision
    requests: list[str] = []

    @staticmethod
    def commit_of(repo: str) -> str:
        files = StandInHub.repos.get(repo, {})
        return hashlib.sha1(repr(sorted((k, v) for k, v in files.items())).encode()).hexdigest()

    def _answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {"Content-Type": "application/json"}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, answer: dict) -> None:
        self._answer(200, json.dumps(answer).encode())

    def do_POST(self) -> None:  # noqa: N802 (the names http.server calls)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        path = self.path.split("?")[0]
        self.requests.append(f"POST {path}")
        if path == "/api/repos/create":
            asked = json.loads(body)
            repo = f"{asked['organization']}/{asked['name']}"
            self.repos.setdefault(repo, {})
            return self._json({"url": f"http://{self.headers['Host']}/{repo}"})
        if path == "/api/validate-yaml":
            return self._json({})
        parts = path.removeprefix("/api/models/").split("/")  # user, name, preupload|commit, revision
        repo, rest = "/".join(parts[:2]), "/".join(parts[2:])
        if rest.startswith("preupload"):
            files = json.loads(body)["files"]
            return self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                         for f in files]})
        if rest.startswith("commit"):
            for line in body.splitlines():
                entry = json.loads(line)
                if entry["key"] == "file":
                    self.repos[repo][entry["value"]["path"]] = base64.b64decode(entry["value"]["content"])
            commit = self.commit_of(repo)
            return self._json({"commitUrl": f"http://{self.headers['Host']}/{repo}/commit/{commit}",
                               "commitOid": commit})
        self._answer(404)

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?")[0]
        self.requests.append(f"{self.command} {path}")
        if path.startswith("/api/models/") and "/revision/" in path:
            repo = path.removeprefix("/api/models/").split("/revision/")[0]
            if repo not in self.repos:
                return self._answer(404, b"{}", {"Content-Type": "application/json", "X-Error-Code": "RepoNotFound"})
            return self._json({"id": repo, "sha": self.commit_of(repo),
                               "siblings": [{"rfilename": name} for name in sorted(self.repos[repo])]})
        if path.startswith("/api/models/") and "/tree/" in path:
            repo = path.removeprefix("/api/models/").split("/tree/")[0]
            files = self.repos.get(repo, {})
            listing = [{"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                       for name, data in sorted(files.items())]
            return self._answer(200, json.dumps(listing).encode())
        if "/resolve/" in path:
            repo, _, rest = path.lstrip("/").partition("/resolve/")
            name = rest.partition("/")[2]
            data = self.repos.get(repo, {}).get(name)
            if data is None:
                return self._answer(404, b"", {"X-Error-Code": "EntryNotFound"})
            return self._answer(200, data, {"Content-Type": "application/octet-stream",
                                            "X-Repo-Commit": self.commit_of(repo),
                                            "ETag": f'"{hashlib.sha256(data).hexdigest()}"'})
        self._answer(404)

    do_HEAD = do_GET

    def log_message(self, *args) -> None:
        pass


@contextmanager
def stand_in_hub() -> Iterator[str]:
    """The stand-in's address while the block runs (its repos start empty)."""
    StandInHub.repos, StandInHub.requests = {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandInHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
