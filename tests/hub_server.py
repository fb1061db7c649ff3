"""An in-memory stand-in for the Hugging Face Hub HTTP API, for tests (standard library only).

It serves the small surface that ``huggingface_hub`` and ``transformers`` use to create a repo, upload a folder
and download it again (HF_NOTES.md §7(c)):

    POST /api/repos/create                              create a repo (409 + "url" when it exists)
    POST /api/validate-yaml                             model-card metadata check (always fine)
    POST /api/{type}s/{ns}/{name}/preupload/{rev}       every file is "regular" (no LFS / xet)
    POST /api/{type}s/{ns}/{name}/commit/{rev}          ndjson commit: file / deletedFile / deletedFolder
    POST /api/{type}s/{ns}/{name}/branch/{branch}       create a branch
    GET  /api/{type}s/{ns}/{name}[/revision/{rev}]      repo info: sha, siblings
    GET  /api/{type}s/{ns}/{name}/tree/{rev}[/{path}]   file listing (?recursive=true)
    HEAD/GET /[{type}s/]{ns}/{name}/resolve/{rev}/{path} file metadata / bytes

Repo ids are always ``namespace/name``. The server listens on 127.0.0.1 only, on a free port, keeps everything
in memory, refuses request bodies over ``max_body_bytes``, and stops when its context ends (or, as a backstop,
after ``max_lifetime_s``). It records each request's method, path and headers in ``requests`` so tests can check
which credentials were sent.

    with serve_hub() as hub:                     # or the `hub_server` fixture in tests/test_hub.py
        env = hub.client_env(tmp_path / "hf_home")   # for a subprocess: HF_ENDPOINT, HF_HOME, no token
        with hub.patched_client(tmp_path / "hf_home"):   # for this process: huggingface_hub reads env at import
            HfApi().create_repo("org/name")
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # git's empty tree: the sha of a new repo's first commit


def git_blob_oid(data: bytes) -> str:
    """The git object id of a file, as the Hub reports it for regular (non-LFS) files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool = False
    refs: dict = field(default_factory=dict)  # branch -> commit sha
    commits: dict = field(default_factory=dict)  # commit sha -> {path: bytes} (a full snapshot)

    def resolve(self, revision: str) -> str | None:
        """Commit sha of a branch name or a commit sha; None when unknown."""
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict


class HubServer:
    """The server and its in-memory repos. Use ``serve_hub()`` (a context manager) rather than start/stop."""

    def __init__(self, max_body_bytes: int = 256 * 2**20, max_lifetime_s: float = 900.0,
                 max_requests_kept: int = 10_000):
        self.max_body_bytes = max_body_bytes
        self.max_lifetime_s = max_lifetime_s
        self.max_requests_kept = max_requests_kept
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[RecordedRequest] = []
        self.lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    # ---- life cycle
    def start(self) -> "HubServer":
        handler = type("HubHandler", (_Handler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)  # loopback only, free port
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        # Backstop: never outlive a test session that forgot to stop it.
        self._timer = threading.Timer(self.max_lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.cancel()
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the hub server is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # ---- helpers for tests
    def client_env(self, hf_home, base_env: dict | None = None) -> dict:
        """Environment for a subprocess client: this endpoint, a throw-away HF_HOME, no ambient token."""
        env = dict(os.environ if base_env is None else base_env)
        for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE",
                     "HF_MODULES_CACHE", "HF_TOKEN_PATH", "HF_XET_CACHE"):
            env.pop(name, None)
        env.update(HF_ENDPOINT=self.url, HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1",
                   HF_HUB_DISABLE_PROGRESS_BARS="1")
        return env

    @contextlib.contextmanager
    def patched_client(self, hf_home):
        """Points this process's huggingface_hub at the server. It read HF_ENDPOINT and HF_HOME at import, so the
        derived constants are patched too, and transformers' shared HfApi is made afresh; everything is restored on exit."""
        from huggingface_hub import constants

        hf_home = Path(hf_home)
        patches = {
            "ENDPOINT": self.url,
            "HUGGINGFACE_CO_URL_TEMPLATE": self.url + "/{repo_id}/resolve/{revision}/{filename}",
            "HF_HOME": str(hf_home),
            "HF_HUB_CACHE": str(hf_home / "hub"),
            "HF_HUB_OFFLINE": False,
            "HF_XET_CACHE": str(hf_home / "xet"),
            "HF_TOKEN_PATH": str(hf_home / "token"),  # never send a stored login to the test server
            "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
            "HF_HUB_DISABLE_TELEMETRY": True,
        }
        env = {"HF_ENDPOINT": self.url, "HF_HOME": str(hf_home), "HF_XET_CACHE": str(hf_home / "xet"), "HF_TOKEN": None}
        saved = {name: getattr(constants, name) for name in patches}
        saved_env = {name: os.environ.get(name) for name in env}
        import transformers.utils.hub as transformers_hub  # caches one HfApi, with the endpoint of its first use

        saved_api = getattr(transformers_hub, "_hf_api", None)
        try:
            transformers_hub._hf_api = None
            for name, value in patches.items():
                setattr(constants, name, value)
            for name, value in env.items():  # hf_xet reads the environment itself
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            yield self
        finally:
            transformers_hub._hf_api = saved_api
            for name, value in saved.items():
                setattr(constants, name, value)
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """Snapshot {path: bytes} of a repo at a revision."""
        with self.lock:
            repo = self.repos[(repo_type, repo_id)]
            return dict(repo.commits[repo.resolve(revision)])

    def authorization_headers(self) -> list[str]:
        """Every Authorization header the server received, in order."""
        with self.lock:
            return [v for r in self.requests for k, v in r.headers.items() if k.lower() == "authorization"]

    # ---- repo operations (called with self.lock held)
    def _create(self, repo_type: str, repo_id: str, private: bool) -> bool:
        if (repo_type, repo_id) in self.repos:
            return False
        repo = Repo(repo_id, repo_type, private)
        repo.commits[EMPTY_TREE] = {}
        repo.refs["main"] = EMPTY_TREE
        self.repos[(repo_type, repo_id)] = repo
        return True

    def _commit(self, repo: Repo, branch: str, lines: list[dict]) -> str:
        parent = repo.refs[branch]
        files = dict(repo.commits[parent])
        summary = ""
        for line in lines:
            key, value = line.get("key"), line.get("value", {})
            if key == "header":
                summary = value.get("summary", "")
                expected = value.get("parentCommit")
                if expected and expected != parent:
                    raise _HTTPError(412, f"parent commit {expected} is not the head of {branch}")
            elif key == "file":
                if value.get("encoding") != "base64":
                    raise _HTTPError(400, f"unsupported file encoding {value.get('encoding')!r}")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: d for p, d in files.items() if not p.startswith(prefix)}
            else:  # lfsFile and copies need an LFS store, which this server does not have
                raise _HTTPError(400, f"unsupported commit operation {key!r}")
        digest = hashlib.sha1(parent.encode() + summary.encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + git_blob_oid(files[path]).encode())
        sha = digest.hexdigest()
        repo.commits[sha] = files
        repo.refs[branch] = sha
        return sha


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, error_code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.error_code = status, message, error_code


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer  # set on the subclass made in HubServer.start
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries a Content-Length
    timeout = 30  # seconds an idle connection may block a handler thread

    def log_message(self, format, *args):  # quiet: tests read self.hub.requests instead
        pass

    # ---- plumbing
    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json", headers: dict | None = None,
              content_length: int | None = None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if content_length is None else content_length))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload, headers: dict | None = None):
        self._send(status, json.dumps(payload).encode(), headers=headers)

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            raise _HTTPError(411, "chunked request bodies are not supported; send a Content-Length")
        size = int(self.headers.get("Content-Length") or 0)
        if size > self.hub.max_body_bytes:
            self.close_connection = True  # the unread body makes the connection unusable
            raise _HTTPError(413, f"request body of {size} bytes is over the limit of {self.hub.max_body_bytes}")
        return self.rfile.read(size) if size else b""

    def _dispatch(self):
        with self.hub.lock:
            if len(self.hub.requests) < self.hub.max_requests_kept:
                self.hub.requests.append(RecordedRequest(self.command, self.path, dict(self.headers.items())))
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            body = self._body() if self.command == "POST" else b""
            self._route(parts, query, body)
        except _HTTPError as e:
            headers = {"X-Error-Code": e.error_code} if e.error_code else {}
            self._json(e.status, {"error": e.message}, headers={**headers, "X-Error-Message": e.message})
        except (KeyError, ValueError, TypeError) as e:  # malformed client payloads
            self._json(400, {"error": f"bad request: {e!r}"})

    do_GET = do_HEAD = do_POST = lambda self: self._dispatch()  # noqa: E731

    # ---- routing
    def _repo(self, repo_type: str, ns: str, name: str) -> Repo:
        repo = self.hub.repos.get((repo_type, f"{ns}/{name}"))
        if repo is None:
            raise _HTTPError(404, f"Repository {ns}/{name} not found", "RepoNotFound")
        return repo

    def _snapshot(self, repo: Repo, revision: str) -> tuple[str, dict]:
        sha = repo.resolve(revision)
        if sha is None:
            raise _HTTPError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha, repo.commits[sha]

    def _route(self, parts: list[str], query: dict, body: bytes):
        method = self.command
        with self.hub.lock:
            if parts[:1] == ["api"]:
                return self._api(method, parts[1:], query, body)
            # file download: /{ns}/{name}/resolve/{rev}/{path}, datasets and spaces under their own prefix
            repo_type = "model"
            if parts[:1] in (["datasets"], ["spaces"]):
                repo_type, parts = parts[0][:-1], parts[1:]
            if method in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
                repo = self._repo(repo_type, parts[0], parts[1])
                sha, files = self._snapshot(repo, parts[3])
                path = "/".join(parts[4:])
                if path not in files:
                    raise _HTTPError(404, f"Entry not found: {path}", "EntryNotFound")
                data = files[path]
                oid = git_blob_oid(data)
                return self._send(200, data, "application/octet-stream",
                                  headers={"X-Repo-Commit": sha, "ETag": f'"{oid}"'})
        raise _HTTPError(404, f"no route for {method} {self.path}")

    def _api(self, method: str, parts: list[str], query: dict, body: bytes):
        hub = self.hub
        if method == "POST" and parts == ["repos", "create"]:
            payload = json.loads(body)
            repo_type = payload.get("type") or "model"
            namespace = payload.get("organization") or "user"
            repo_id = f"{namespace}/{payload['name']}"
            url = hub.url + ("" if repo_type == "model" else f"/{repo_type}s") + f"/{repo_id}"
            if hub._create(repo_type, repo_id, payload.get("private") or payload.get("visibility") == "private"):
                return self._json(200, {"url": url, "name": repo_id, "id": repo_id})
            return self._json(409, {"url": url, "error": "You already created this repo"})
        if method == "POST" and parts == ["validate-yaml"]:
            return self._json(200, {"errors": [], "warnings": []})
        if len(parts) < 3 or parts[0] not in ("models", "datasets", "spaces"):
            raise _HTTPError(404, f"no route for {method} {self.path}")
        repo_type = parts[0][:-1]
        repo = self._repo(repo_type, parts[1], parts[2])
        action, rest = (parts[3], parts[4:]) if len(parts) > 3 else (None, [])
        commit_url_base = hub.url + ("" if repo_type == "model" else f"/{repo_type}s") + f"/{repo.repo_id}"

        if method == "POST" and action == "preupload" and rest:
            self._snapshot(repo, rest[0])
            files = json.loads(body)["files"]
            return self._json(200, {"files": [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
            ]})
        if method == "POST" and action == "commit" and rest:
            branch = rest[0]
            if branch not in repo.refs:
                raise _HTTPError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            sha = hub._commit(repo, branch, lines)
            return self._json(200, {"commitUrl": f"{commit_url_base}/commit/{sha}", "commitOid": sha,
                                    "pullRequestUrl": None})
        if method == "POST" and action == "branch" and rest:
            branch = "/".join(rest)
            if branch in repo.refs:
                raise _HTTPError(409, f"branch {branch} already exists")
            start = json.loads(body or b"{}").get("startingPoint") or "main"
            repo.refs[branch], _ = self._snapshot(repo, start)
            return self._json(200, {})
        if method == "GET" and action in (None, "revision"):
            sha, files = self._snapshot(repo, rest[0] if rest else "main")
            return self._json(200, {
                "id": repo.repo_id, "modelId": repo.repo_id, "sha": sha, "private": repo.private,
                "siblings": [{"rfilename": p} for p in sorted(files)], "tags": [], "likes": 0, "downloads": 0,
            })
        if method == "GET" and action == "tree" and rest:
            _, files = self._snapshot(repo, rest[0])
            return self._json(200, _tree(files, "/".join(rest[1:]), query.get("recursive") in ("true", "1", "True")))
        raise _HTTPError(404, f"no route for {method} {self.path}")


def _tree(files: dict, folder: str, recursive: bool) -> list[dict]:
    """Listing of ``folder`` (``""`` = root): its files and sub-folders, or everything below it when recursive."""
    prefix = folder.strip("/") + "/" if folder.strip("/") else ""
    entries, folders = [], set()
    for path in sorted(files):
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix):].split("/")
        for depth in range(1, len(rest)):  # the folders between `folder` and the file
            if recursive or depth == 1:
                folders.add(prefix + "/".join(rest[:depth]))
        if recursive or len(rest) == 1:
            data = files[path]
            entries.append({"type": "file", "path": path, "size": len(data), "oid": git_blob_oid(data)})
    if not entries and not folders and prefix:
        raise _HTTPError(404, f"Entry not found: {folder}", "EntryNotFound")
    dirs = [{"type": "directory", "path": p, "size": 0, "oid": hashlib.sha1(p.encode()).hexdigest()}
            for p in sorted(folders)]
    return dirs + entries


@contextlib.contextmanager
def serve_hub(**kwargs):
    """A running HubServer for the duration of the ``with`` block; it is shut down on exit."""
    server = HubServer(**kwargs).start()
    try:
        yield server
    finally:
        server.stop()
