"""A local stand-in for the Hugging Face Hub's HTTP API, for testing ``msn push`` offline.

It implements the endpoints that huggingface_hub (2.x, ``HfApi``) calls to create a model
repository and commit files to it, and nothing more:

- ``GET  /api/whoami-v2``                               who the token belongs to
- ``POST /api/repos/create``                            create a repo (409 when it exists)
- ``GET  /api/models/{repo}`` and ``.../revision/{rev}`` repo info (sha, private, files)
- ``GET  /api/models/{repo}/refs``                      branches and tags
- ``POST /api/models/{repo}/branch/{branch}``           create a branch (409 when it exists)
- ``POST /api/validate-yaml``                           README.md metadata check
- ``POST /api/models/{repo}/preupload/{rev}``           upload mode per file: always "regular",
  so no LFS or Xet traffic; ``oid`` is the git blob sha1 of the file already there, if any
- ``GET  /api/agent-harnesses``                        a registry huggingface_hub 2.x reads for
  its user agent (answered empty)
- ``POST /api/models/{repo}/commit/{rev}``              the ndjson commit (``?create_pr=1`` opens
  a pull request: a ``refs/pr/N`` ref made from ``rev``)

Status codes and headers follow the real Hub where huggingface_hub depends on them (``X-Error-Code:
RepoNotFound`` / ``RevisionNotFound``, ``X-Error-Message``, a JSON ``{"error": ...}`` body).
Every request is recorded (method, path, query, whether it carried a token: never the token),
every commit keeps the exact bytes received per file, and faults can be injected by path.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    oid: str
    repo_id: str
    ref: str  # the branch or refs/pr/N the commit landed on
    summary: str
    description: str
    files: dict[str, bytes]  # path -> exact bytes received
    deleted: list[str]
    pr_num: int | None = None
    lfs_files: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Repo:
    repo_id: str
    private: bool
    refs: dict[str, str] = field(default_factory=dict)  # branch or refs/pr/N -> commit oid
    trees: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit oid -> files
    prs: dict[int, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    authenticated: bool
    status: int = 0


@dataclass
class Fault:
    method: str | None
    pattern: re.Pattern[str]
    status: int
    message: str
    times: int | None  # None: every time


class HubState:
    """Users, tokens, organisations and repos, with a lock; tests read it directly."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.users: dict[str, dict[str, Any]] = {}  # token -> {"name", "orgs", "role"}
        self.orgs: set[str] = set()
        self.repos: dict[str, Repo] = {}
        self.commits: list[Commit] = []
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self._counter = 0

    def new_oid(self, seed: str) -> str:
        self._counter += 1
        return hashlib.sha1(f"{self._counter}:{seed}".encode()).hexdigest()


class HubServer:
    """``with HubServer() as hub: ...``; ``hub.url`` is the endpoint to put in ``HF_ENDPOINT``."""

    def __init__(self) -> None:
        self.state = HubState()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- set-up --------------------------------------------------------------------------------
    def add_user(self, name: str, token: str, *, orgs: tuple[str, ...] = (), role: str = "write") -> None:
        with self.state.lock:
            self.state.users[token] = {"name": name, "orgs": list(orgs), "role": role}
            self.state.orgs.update(orgs)

    def add_org(self, name: str) -> None:
        with self.state.lock:
            self.state.orgs.add(name)

    def add_repo(self, repo_id: str, files: dict[str, bytes] | None = None, *, private: bool = False,
                 branches: dict[str, dict[str, bytes]] | None = None) -> Repo:
        """A repo as if made earlier: ``main`` holds ``.gitattributes`` plus ``files``."""
        with self.state.lock:
            repo = _new_repo(self.state, repo_id, private)
            if files:
                tree = {**repo.trees[repo.refs["main"]], **files}
                oid = self.state.new_oid(repo_id + "seed")
                repo.trees[oid] = tree
                repo.refs["main"] = oid
            for name, branch_files in (branches or {}).items():
                oid = self.state.new_oid(repo_id + name)
                repo.trees[oid] = dict(branch_files)
                repo.refs[name] = oid
            return repo

    def fail(self, pattern: str, status: int, message: str = "injected failure", *,
             method: str | None = None, times: int | None = None) -> None:
        """Answer requests whose path matches ``pattern`` (regex search) with ``status``."""
        with self.state.lock:
            self.state.faults.append(Fault(method, re.compile(pattern), status, message, times))

    # -- inspection ----------------------------------------------------------------------------
    @property
    def requests(self) -> list[Request]:
        with self.state.lock:
            return list(self.state.requests)

    @property
    def commits(self) -> list[Commit]:
        with self.state.lock:
            return list(self.state.commits)

    def repo(self, repo_id: str) -> Repo:
        return self.state.repos[repo_id]

    def files_at(self, repo_id: str, ref: str = "main") -> dict[str, bytes]:
        repo = self.state.repos[repo_id]
        return dict(repo.trees[repo.refs[ref]])


def _new_repo(state: HubState, repo_id: str, private: bool) -> Repo:
    # The real Hub starts every repo with one commit holding a .gitattributes file.
    repo = Repo(repo_id, private)
    oid = state.new_oid(repo_id)
    repo.trees[oid] = {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}
    repo.refs["main"] = oid
    state.repos[repo_id] = repo
    return repo


class _HttpError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


_REPO = r"(?P<repo>[^/]+/[^/]+)"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(r"^/api/whoami-v2$"), "whoami"),
    ("GET", re.compile(r"^/api/agent-harnesses$"), "agent_harnesses"),
    ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("GET", re.compile(rf"^/api/models/{_REPO}/refs$"), "refs"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/branch/(?P<branch>[^/]+)$"), "create_branch"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
    ("GET", re.compile(rf"^/api/models/{_REPO}/revision/(?P<rev>[^/]+)$"), "repo_info"),
    ("GET", re.compile(rf"^/api/models/{_REPO}$"), "repo_info"),
]


def _make_handler(server: HubServer) -> type[BaseHTTPRequestHandler]:
    state = server.state

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_PUT(self) -> None:
            self._dispatch("PUT")

        def do_DELETE(self) -> None:
            self._dispatch("DELETE")

        # -- plumbing ------------------------------------------------------------------------
        def _dispatch(self, method: str) -> None:
            split = urlsplit(self.path)
            path = split.path
            query = parse_qs(split.query)
            length = int(self.headers.get("Content-Length") or 0)
            self.body = self.rfile.read(length) if length else b""
            self.query = query
            auth = self.headers.get("Authorization", "")
            self.token = auth[7:] if auth.startswith("Bearer ") else None
            record = Request(method, path, query, self.token is not None)
            with state.lock:
                state.requests.append(record)
            try:
                self._fault(method, path)
                for m, rx, name in _ROUTES:
                    match = rx.match(path)
                    if m == method and match:
                        groups = {k: unquote(v) for k, v in match.groupdict().items()}
                        with state.lock:
                            status, payload = getattr(self, "h_" + name)(**groups)
                        break
                else:
                    raise _HttpError(404, f"no route for {method} {path}")
            except _HttpError as e:
                record.status = e.status
                self._send(e.status, {"error": e.message}, e.message, e.code)
                return
            record.status = status
            self._send(status, payload)

        def _fault(self, method: str, path: str) -> None:
            with state.lock:
                for f in state.faults:
                    if (f.method is None or f.method == method) and f.pattern.search(path) and \
                            (f.times is None or f.times > 0):
                        if f.times is not None:
                            f.times -= 1
                        raise _HttpError(f.status, f.message)

        def _send(self, status: int, payload: Any, message: str | None = None,
                  code: str | None = None) -> None:
            raw = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            if message:
                self.send_header("X-Error-Message", message)
            if code:
                self.send_header("X-Error-Code", code)
            self.end_headers()
            self.wfile.write(raw)

        def _json(self) -> Any:
            try:
                return json.loads(self.body or b"{}")
            except json.JSONDecodeError as e:
                raise _HttpError(400, f"invalid JSON body: {e}") from None

        # -- auth ----------------------------------------------------------------------------
        def _user(self, required: bool = True) -> dict[str, Any] | None:
            if self.token is None:
                if required:
                    raise _HttpError(401, "You must be authenticated to access this resource")
                return None
            user = state.users.get(self.token)
            if user is None:
                raise _HttpError(401, "Invalid credentials in Authorization header")
            return user

        def _can_read(self, repo: Repo, user: dict[str, Any] | None) -> bool:
            if not repo.private:
                return True
            return user is not None and repo.repo_id.split("/")[0] in (user["name"], *user["orgs"])

        def _repo(self, repo_id: str, *, write: bool) -> Repo:
            user = self._user(required=write) if write else self._user_optional()
            repo = state.repos.get(repo_id)
            if repo is None or not self._can_read(repo, user):
                raise _HttpError(404, "Repository not found", "RepoNotFound")
            if write:
                assert user is not None
                if user["role"] != "write":
                    raise _HttpError(403, "You don't have write access: the token is read-only")
                if repo_id.split("/")[0] not in (user["name"], *user["orgs"]):
                    raise _HttpError(403, f"You don't have the rights to write to {repo_id}")
            return repo

        def _user_optional(self) -> dict[str, Any] | None:
            return self._user(required=False)

        def _ref(self, repo: Repo, rev: str) -> str:
            if rev in repo.refs:
                return rev
            if rev.startswith("refs/heads/") and rev[len("refs/heads/"):] in repo.refs:
                return rev[len("refs/heads/"):]
            if rev in repo.trees:  # a commit oid
                return rev
            raise _HttpError(404, f"Invalid rev id: {rev}", "RevisionNotFound")

        def _oid(self, repo: Repo, ref: str) -> str:
            return repo.refs.get(ref, ref)

        # -- endpoints -----------------------------------------------------------------------
        def h_whoami(self) -> tuple[int, Any]:
            user = self._user()
            assert user is not None
            return 200, {"type": "user", "name": user["name"],
                         "orgs": [{"name": o, "type": "org"} for o in user["orgs"]],
                         "auth": {"type": "access_token",
                                  "accessToken": {"displayName": "test", "role": user["role"]}}}

        def h_agent_harnesses(self) -> tuple[int, Any]:
            # huggingface_hub 2.x fetches this registry (once a day, cached under HF_HOME) to
            # tag its user agent; an empty registry means "no agent detected".
            return 200, {"standardEnvVars": [], "harnesses": {}}

        def h_create_repo(self) -> tuple[int, Any]:
            user = self._user()
            assert user is not None
            body = self._json()
            name, org = body.get("name"), body.get("organization")
            if body.get("type", "model") != "model":
                raise _HttpError(400, "this stand-in only hosts model repos")
            namespace = org or user["name"]
            if namespace != user["name"] and namespace not in state.orgs:
                raise _HttpError(404, f"Organization '{namespace}' not found")
            if namespace != user["name"] and namespace not in user["orgs"]:
                raise _HttpError(403, f"You don't have the rights to create a model under the "
                                      f"namespace \"{namespace}\"")
            if user["role"] != "write":
                raise _HttpError(403, "You don't have the rights to create a repo: the token is read-only")
            repo_id = f"{namespace}/{name}"
            url = f"{server.url}/{repo_id}"
            if repo_id in state.repos:
                raise _HttpError(409, "You already created this model repo")
            _new_repo(state, repo_id, body.get("visibility") == "private" or bool(body.get("private")))
            return 200, {"url": url, "name": repo_id, "id": state.new_oid("id")[:24]}

        def h_repo_info(self, repo: str, rev: str | None = None) -> tuple[int, Any]:
            r = self._repo(repo, write=False)
            ref = self._ref(r, rev or "main")
            oid = self._oid(r, ref)
            return 200, {"id": repo, "author": repo.split("/")[0], "sha": oid, "private": r.private,
                         "siblings": [{"rfilename": p} for p in sorted(r.trees[oid])]}

        def h_refs(self, repo: str) -> tuple[int, Any]:
            r = self._repo(repo, write=False)
            branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": oid}
                        for n, oid in r.refs.items() if not n.startswith("refs/")]
            return 200, {"branches": branches, "tags": [], "converts": []}

        def h_create_branch(self, repo: str, branch: str) -> tuple[int, Any]:
            r = self._repo(repo, write=True)
            if branch in r.refs:
                raise _HttpError(409, f"Reference already exists: refs/heads/{branch}")
            start = self._json().get("startingPoint") or "main"
            r.refs[branch] = self._oid(r, self._ref(r, start))
            return 200, {}

        def h_validate_yaml(self) -> tuple[int, Any]:
            body = self._json()
            content = body.get("content", "")
            m = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.DOTALL)
            if not m:
                return 200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]}
            try:
                meta = yaml.safe_load(m.group(1))
            except yaml.YAMLError as e:
                raise _HttpError(400, f"invalid YAML: {e}") from None
            if not isinstance(meta, dict):
                raise _HttpError(400, "YAML metadata must be a mapping")
            return 200, {"errors": [], "warnings": []}

        def h_preupload(self, repo: str, rev: str) -> tuple[int, Any]:
            r = self._repo(repo, write=True)
            ref = self._ref(r, rev)
            tree = r.trees[self._oid(r, ref)]
            files = self._json().get("files", [])
            out = []
            for f in files:
                path = f["path"]
                base64.b64decode(f.get("sample", ""), validate=True)
                out.append({"path": path, "uploadMode": "regular", "shouldIgnore": False,
                            "oid": git_blob_sha1(tree[path]) if path in tree else None})
            return 200, {"files": out, "commitOid": self._oid(r, ref)}

        def h_commit(self, repo: str, rev: str) -> tuple[int, Any]:
            r = self._repo(repo, write=True)
            base_ref = self._ref(r, rev)
            lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
            if not lines or lines[0].get("key") != "header":
                raise _HttpError(400, "the commit payload must start with a header line")
            header = lines[0]["value"]
            files: dict[str, bytes] = {}
            deleted: list[str] = []
            lfs: list[dict[str, Any]] = []
            for item in lines[1:]:
                key, value = item.get("key"), item.get("value", {})
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise _HttpError(400, "only base64 file content is supported")
                    files[value["path"]] = base64.b64decode(value["content"], validate=True)
                elif key == "deletedFile":
                    deleted.append(value["path"])
                elif key == "lfsFile":
                    lfs.append(value)  # never uploaded here: preupload answers "regular"
                else:
                    raise _HttpError(400, f"unsupported commit operation '{key}'")
            if lfs:
                raise _HttpError(400, "LFS pointer for a file that was never uploaded")
            parent = self._oid(r, base_ref)
            if header.get("parentCommit") and header["parentCommit"] != parent:
                raise _HttpError(412, "A commit has happened since. Please refresh and try again.")
            tree = dict(r.trees[parent])
            for p in deleted:
                if p not in tree:
                    raise _HttpError(404, "A file with this name doesn't exist", "EntryNotFound")
                del tree[p]
            tree.update(files)
            oid = state.new_oid(repo + header.get("summary", ""))
            r.trees[oid] = tree
            pr_num = None
            pr_url = None
            create_pr = self.query.get("create_pr", ["0"])[0] in ("1", "true")
            if create_pr:
                pr_num = max(r.prs, default=0) + 1
                ref = f"refs/pr/{pr_num}"
                r.prs[pr_num] = {"target": base_ref, "title": header.get("summary", "")}
                pr_url = f"{server.url}/{repo}/discussions/{pr_num}"
            else:
                ref = base_ref
            r.refs[ref] = oid
            state.commits.append(Commit(oid, repo, ref, header.get("summary", ""),
                                        header.get("description", ""), files, deleted, pr_num, lfs))
            return 200, {"success": True, "commitOid": oid,
                         "commitUrl": f"{server.url}/{repo}/commit/{oid}",
                         "pullRequestUrl": pr_url}

    return Handler
