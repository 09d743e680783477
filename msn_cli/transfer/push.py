"""``push``: publish a verified converted folder to the Hugging Face Hub, with a model card.

Two steps, so that everything that can be refused is refused before a byte is sent:

1. :func:`plan_push` (no network): read ``msn_manifest.json``; require a passed verify and
   files that match the manifest's sizes and sha256 (``skip_verify_check`` turns both into
   warnings); build the model card; list the commit's files.
2. :func:`send_push`: with ``HfApi`` -- check the token (``whoami``), create the repo if it is not
   there, create ``revision`` if it is a missing branch, then one commit holding every file
   (so a failed upload leaves the repo as it was), optionally as a pull request.

:func:`push_folder` does both (or only the first, for ``dry_run``). Refusals:

- verify ran and recorded a failure -> :class:`~msn_cli.errors.VerificationFailed` (exit 1);
- no verify recorded, files missing or different from the manifest, no manifest ->
  :class:`~msn_cli.errors.FolderError` (exit 3);
- every Hub failure (401/403, unknown namespace, network down, offline mode) ->
  :class:`~msn_cli.errors.HubError` or :class:`~msn_cli.errors.OfflineError` (exit 4).

The token is resolved by huggingface_hub (``token``, else ``HF_TOKEN``, else the stored login)
and never appears in a message or a result. The endpoint is ``HF_ENDPOINT`` when set.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msn_cli import __version__
from msn_cli.errors import FolderError, HubError, OfflineError, UsageError, VerificationFailed
from msn_cli.hf.folder import UPLOADED_FILES
from msn_cli.hf.manifest import MANIFEST, FileRow, Manifest, VerifyRecord, check_files, read_manifest
from msn_cli.progress import ProgressFn, no_progress
from msn_cli.transfer.offline import offline_variable
from msn_cli.transfer.published import commit_description, default_message, public_manifest
from msn_cli.transfer.pushfiles import HeldFiles
from msn_cli.util import safeio
from msn_cli.util.safeio import redact, strip_credentials

CARD = "README.md"
DEFAULT_ENDPOINT = "https://huggingface.co"


@dataclass
class PushFile:
    path: str  # path in the repo
    size: int
    sha256: str
    data: bytes | None = None  # uploaded from memory: the manifest, the card, a small file as hashed
    handle: io.BufferedReader | None = None  # uploaded from the open file that was hashed

    def content(self) -> bytes | io.BufferedReader:
        return self.handle if self.handle is not None else (self.data or b"")

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


@dataclass
class PushPlan:
    folder: Path
    repo_id: str
    revision: str | None
    private: bool
    create_pr: bool
    commit_message: str
    commit_description: str
    files: list[PushFile]
    card: str
    verify: VerifyRecord | None
    verify_checked: bool
    warnings: list[str] = field(default_factory=list)
    license: str = "cc-by-nc-4.0"
    held: HeldFiles | None = None  # the folder's files, open from the check to the upload

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def close(self) -> None:
        """Close the files held open for the upload (a plan sends nothing after this)."""
        if self.held is not None:
            self.held.close()


@dataclass
class PushResult:
    plan: PushPlan
    endpoint: str
    dry_run: bool = False
    user: str | None = None
    repo_url: str | None = None
    repo_created: bool | None = None
    commit_url: str | None = None
    commit_oid: str | None = None
    pr_url: str | None = None
    pr_num: int | None = None
    changed: bool | None = None  # False: the revision already held exactly these files

    def __post_init__(self) -> None:
        self.endpoint = strip_credentials(self.endpoint)  # HF_ENDPOINT's credentials: never shown

    @property
    def warnings(self) -> list[str]:
        return self.plan.warnings

    def to_dict(self) -> dict[str, Any]:
        p = self.plan
        return {
            "repo_id": p.repo_id, "endpoint": self.endpoint, "dry_run": self.dry_run,
            "folder": str(p.folder), "revision": p.revision or "main", "private": p.private,
            "create_pr": p.create_pr, "user": self.user, "repo_url": self.repo_url,
            "repo_created": self.repo_created, "commit_url": self.commit_url,
            "commit_oid": self.commit_oid, "changed": self.changed, "pr_url": self.pr_url,
            "pr_num": self.pr_num,
            "commit_message": p.commit_message, "files": [f.to_dict() for f in p.files],
            "total_bytes": p.total_bytes, "verify_checked": p.verify_checked,
            "verify": ({"passed": p.verify.get("passed"), "summary": p.verify.get("summary")}
                       if isinstance(p.verify, dict) else None),
            "warnings": list(p.warnings), "license": p.license, "card": p.card,
        }


# -- step 1: everything local ---------------------------------------------------------------------

def check_repo_id(repo_id: str) -> str:
    """``namespace/name`` with the Hub's character rules; checked before anything else."""
    rid = repo_id.strip()
    why = _repo_id_problem(rid)
    if why:
        raise UsageError(f"'{repo_id}' is not a valid repo id: {why}",
                         hint="use NAMESPACE/NAME, e.g. my-org/vit-msn-small")
    return rid


def _repo_id_problem(rid: str) -> str | None:
    """Why ``rid`` is no NAMESPACE/NAME the Hub accepts (huggingface_hub's validate_repo_id
    judges the characters; ASCII is required here too, as huggingface_hub < 1.0 does not)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import (  # type: ignore[attr-defined]  # public, listed lazily there
        validate_repo_id,
    )

    parts = rid.split("/")
    if len(parts) != 2 or not all(parts):
        return "give it as NAMESPACE/NAME (your user or an organization, then the model's name)"
    characters = ("each part is 1 to 96 letters, digits, '-', '_' or '.', starts and ends with a "
                  "letter, digit or '_', and has no '--' or '..'; the name does not end in .git")
    if not rid.isascii():
        return characters
    try:
        validate_repo_id(rid)
    except HFValidationError:
        return characters
    return None


def plan_push(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    card_path: str | os.PathLike[str] | None = None,
    skip_verify_check: bool = False,
    license: str | None = None,
    progress: ProgressFn = no_progress,
) -> PushPlan:
    """Check the folder and build the commit (files + card); sends nothing.

    ``license``: the card's Hub license id (default ``cc-by-nc-4.0``, the MSN code's)."""
    from msn_cli.hf.card import LICENSE, build_card, check_license

    rid = check_repo_id(repo_id)
    lic = check_license(license) if license is not None else LICENSE
    if revision is not None and not revision.strip():
        raise UsageError("--revision is empty", hint="give a branch name, or leave it out for main")
    if commit_message is not None and not commit_message.strip():
        raise UsageError("--commit-message is empty")
    folder = Path(folder)
    manifest = read_manifest(folder)
    _check_listed(folder, manifest)
    warnings: list[str] = []
    verify = _checked_verify(folder, manifest.get("verify"), skip_verify_check, warnings)
    held = HeldFiles()
    try:
        rows = _checked_files(folder, manifest, skip_verify_check, progress, warnings, held)
        card = build_card(manifest, rid, card_path=card_path, license=lic)
        files = _commit_files(folder, rows, manifest, card, held)
        _refuse_code(folder, files)
    except BaseException:
        held.close()
        raise
    warnings += _left_out(folder, files)
    return PushPlan(folder=folder, repo_id=rid, revision=revision.strip() if revision else None,
                    private=private, create_pr=create_pr,
                    commit_message=(commit_message.strip() if commit_message else default_message(manifest)),
                    commit_description=commit_description(manifest), files=files, card=card,
                    verify=verify, verify_checked=not skip_verify_check, warnings=warnings, license=lic,
                    held=held)


def _check_listed(folder: Path, manifest: Manifest) -> None:
    """The manifest lists exactly the files a converted folder uploads: push never publishes a
    file it does not know (code, a pickle), even one listed with its right hash."""
    listed = manifest.get("files")
    if not listed:
        raise FolderError(f"{folder / MANIFEST} lists no files",
                          hint="the folder was not written by msn convert; convert again")
    if CARD in listed:
        raise FolderError(f"{folder / MANIFEST} lists {CARD}, which push writes itself (the model card)",
                          hint="remove it from the manifest's file table; --card FILE supplies the "
                               "card's body")
    unknown = [name for name in listed if name not in UPLOADED_FILES]
    if unknown:
        raise FolderError(f"{folder / MANIFEST} lists {', '.join(unknown[:5])}"
                          f"{f' and {len(unknown) - 5} more' if len(unknown) > 5 else ''}, not "
                          f"{'a file' if len(unknown) == 1 else 'files'} of a converted folder "
                          f"(push uploads only {', '.join(UPLOADED_FILES)})",
                          hint="convert the checkpoint again into a new folder")
    absent = [name for name in UPLOADED_FILES if name not in listed]
    if absent:
        raise FolderError(f"{folder / MANIFEST} does not list {', '.join(absent)}",
                          hint="the folder is incomplete; convert the checkpoint again")


def _checked_verify(folder: Path, verify: VerifyRecord | None, skip: bool,
                    warnings: list[str]) -> VerifyRecord | None:
    """The recorded verify run, which must have passed (``skip``: a warning where it did not)."""
    if not skip:
        if verify is None:
            raise FolderError(f"{folder} has not been verified: its manifest records no msn verify run",
                              hint=f"run: msn verify {folder}  (or push anyway with --skip-verify-check)")
        if verify.get("passed") is not True:
            raise VerificationFailed(
                f"refusing to push {folder}: msn verify recorded a failure "
                f"({verify.get('summary') or 'no summary'})",
                hint="fix and convert again, or push anyway with --skip-verify-check")
    elif verify is None:
        warnings.append("the folder was never verified (--skip-verify-check): the card says so")
    elif verify.get("passed") is not True:
        warnings.append("msn verify recorded a FAILURE for this folder (--skip-verify-check): "
                        "the card says so")
    return verify


def _checked_files(folder: Path, manifest: Manifest, skip: bool, progress: ProgressFn,
                   warnings: list[str], held: HeldFiles) -> list[FileRow]:
    """Every listed file, present, regular and inside the folder, with the manifest's size and
    sha256 (``skip``: a warning where they differ); each hashed file stays ``held``."""
    total = sum(f["size"] for f in (manifest.get("files") or {}).values())
    progress("checking files", 0, total)
    rows = check_files(folder, manifest, hash_file=held)
    progress("checking files", total, total)
    bad = [r for r in rows if not r["ok"]]
    missing = [r["file"] for r in bad if r.get("problem") == "missing"]
    if missing:
        raise FolderError(f"{folder} is missing {', '.join(missing)}",
                          hint="the folder is incomplete; convert the checkpoint again")
    # outside the folder, not a regular file, a link under its name
    unsendable = [r for r in bad if "size" not in r or str(r.get("problem")).startswith("unreadable")]
    if unsendable:
        what = "; ".join(f"{r['file']}: {r.get('problem')}" for r in unsendable)
        raise FolderError(f"cannot upload {what}", hint="push uploads only regular files inside the folder")
    if bad:
        what = "; ".join(f"{r['file']}: {r.get('problem')}" for r in bad)
        if not skip:
            raise FolderError(f"files of {folder} do not match its manifest ({what})",
                              hint="the folder changed after convert/verify; convert again "
                                   "(or push anyway with --skip-verify-check)")
        warnings.append(f"files differ from the manifest ({what}): the card's hashes and verify "
                        "results do not describe what is uploaded")
    return rows


def _commit_files(folder: Path, rows: list[FileRow], manifest: Manifest, card: str,
                  held: HeldFiles) -> list[PushFile]:
    """The listed files as hashed (held open or in memory), then the public manifest and the
    card from memory. A file ``--skip-verify-check`` let through unhashed is hashed here."""
    files: list[PushFile] = []
    for r in rows:
        try:
            h = held.hold(safeio.inside(folder, r["file"]), no_progress)
        except (OSError, safeio.UnsafeInput) as e:
            raise FolderError(f"cannot upload {r['file']}: {e}",
                              hint="push uploads only regular files inside the folder") from None
        files.append(PushFile(r["file"], h.size, h.sha256, data=h.data, handle=h.handle))
    for path, data in ((MANIFEST, public_manifest(manifest)), (CARD, card.encode("utf-8"))):
        files.append(PushFile(path, len(data), hashlib.sha256(data).hexdigest(), data=data))
    return files


def _refuse_code(folder: Path, files: list[PushFile]) -> None:
    """No uploaded JSON file names code for transformers to fetch and run (``auto_map`` can name
    another repository's code), read in the very bytes that are uploaded."""
    from msn_cli.hf.folder import CODE_KEYS

    def keys(value: object, where: str) -> Iterator[str]:
        if isinstance(value, dict):
            for key, inner in value.items():
                path = f"{where}.{key}" if where else str(key)
                yield from [path] if key in CODE_KEYS else keys(inner, path)
        elif isinstance(value, list):
            for i, inner in enumerate(value):
                yield from keys(inner, f"{where}[{i}]")

    for f in files:
        if not f.path.endswith(".json") or f.path == MANIFEST or f.path == CARD:
            continue
        try:
            if f.data is None:  # held open: larger than any JSON file msn reads
                raise ValueError(f"{f.size} bytes")
            found = list(keys(safeio.parse_json(f.data), ""))
        except (ValueError, UnicodeDecodeError) as e:
            raise FolderError(f"cannot upload {f.path}: not JSON msn can read ({e})",
                              hint="convert the checkpoint again") from None
        if found:
            raise FolderError(f"{folder / f.path} names code to run ({', '.join(found[:5])}), "
                              "which msn never publishes", hint="convert the checkpoint again")


def _left_out(folder: Path, files: list[PushFile]) -> list[str]:
    """Warnings for the folder's files that are not uploaded."""
    warnings = []
    uploaded = {f.path for f in files}
    extra = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                   if p.is_file() and str(p.relative_to(folder).as_posix()) not in uploaded)
    if (folder / CARD).is_file():
        extra = [e for e in extra if e != CARD]
        warnings.append(f"{folder / CARD} is not uploaded: the card is generated "
                        "(use --card FILE to supply its body)")
    if extra:
        warnings.append(f"not uploaded (not in the manifest): {', '.join(extra)}")
    return warnings


# -- step 2: the Hub -----------------------------------------------------------------------------

def hub_endpoint() -> str:
    """``HF_ENDPOINT`` read now (huggingface_hub reads it once, at import)."""
    env = os.environ.get("HF_ENDPOINT", "").strip()
    if env:
        return env.rstrip("/")
    try:
        from huggingface_hub import constants

        return constants.ENDPOINT.rstrip("/")
    except Exception:  # pragma: no cover - very old huggingface_hub
        return DEFAULT_ENDPOINT


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection-level exception types of whatever HTTP client huggingface_hub uses."""
    found: list[type[BaseException]] = []
    for mod, name in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                      ("requests", "ConnectionError"), ("requests", "Timeout")):
        try:
            found.append(getattr(__import__(mod), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _plain_http_errors() -> tuple[type[BaseException], ...]:
    """``requests.HTTPError``, which huggingface_hub < 1.0 raises bare in places (whoami on 401)."""
    try:
        from requests import HTTPError
    except ImportError:  # pragma: no cover - requests is a dependency
        return ()
    return (HTTPError,)


class _Hub:
    """Runs HfApi calls and turns every failure into one HubError with a hint."""

    def __init__(self, endpoint: str, token: str, repo_id: str):
        self.endpoint = endpoint
        self.token = token
        self.repo_id = repo_id
        self.namespace = repo_id.split("/")[0] if "/" in repo_id else None

    def _scrub(self, text: str) -> str:
        text = redact(text)  # credentials of any URL (HF_ENDPOINT's included)
        return text.replace(self.token, "***") if self.token else text

    @contextlib.contextmanager
    def call(self, action: str) -> Iterator[None]:
        from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

        try:
            yield
        except OfflineModeIsEnabled:
            raise OfflineError(f"cannot {action}: huggingface_hub is in offline mode (HF_HUB_OFFLINE)",
                               hint="unset HF_HUB_OFFLINE to push, or use --dry-run") from None
        except HfHubHTTPError as e:
            raise self._http_error(action, e) from None
        except _plain_http_errors() as e:  # huggingface_hub < 1.0: whoami's 401 is requests' own
            raise self._http_error(action, e) from None
        except _transport_errors() as e:
            reason = self._scrub(str(e) or type(e).__name__).splitlines()[0]
            raise HubError(f"cannot reach the Hub at {self.endpoint} to {action}: {reason}",
                           hint="check the network connection (and HF_ENDPOINT, if you set it); "
                                "nothing was committed") from None
        except ValueError as e:  # huggingface_hub's client-side checks (README metadata, ids)
            raise HubError(f"cannot {action}: {self._scrub(str(e)).strip().splitlines()[0]}") from None

    def _http_error(self, action: str, e: BaseException) -> HubError:
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

        status = getattr(getattr(e, "response", None), "status_code", None)
        server = self._scrub((getattr(e, "server_message", None) or "").strip().splitlines()[0]
                             if (getattr(e, "server_message", None) or "").strip() else "")
        said = f" ({status}{': ' + server if server else ''})" if status else ""
        settings = f"{self.endpoint}/settings/tokens"
        if status == 401:
            return HubError(f"the Hub rejected the token{said}",
                            hint="pass a valid token with --token or HF_TOKEN (HF_TOKEN wins over a "
                                 f"stored login), or run 'hf auth login'; tokens: {settings}")
        if status == 403:
            return HubError(f"not allowed to {action}{said}",
                            hint=f"the token needs write access to '{self.namespace or 'your namespace'}' "
                                 f"(fine-grained tokens must list it); tokens: {settings}")
        if isinstance(e, RevisionNotFoundError):
            return HubError(f"cannot {action}: revision not found{said}",
                            hint="check --revision (a branch is created only when it is missing)")
        if isinstance(e, RepositoryNotFoundError):
            return HubError(f"cannot {action}: repository {self.repo_id} not found{said}",
                            hint="check the repo id, and that the token may see and write it")
        if status == 404:
            return HubError(f"cannot {action}: '{self.namespace}' is not a user or organization "
                            f"you can write to{said}",
                            hint="check the namespace in REPO_ID (your user name or an organization "
                                 "you belong to)")
        if status is not None and status >= 500:
            return HubError(f"the Hub failed to {action}{said}",
                            hint="try again later (a commit is all or nothing: a failed one changes nothing)")
        return HubError(f"cannot {action}{said or ': ' + self._scrub(str(e)).splitlines()[0]}",
                        hint="rerun with MSN_DEBUG=1 for the full error")


def push_token(token: str | None = None) -> str:
    """The token a push would use (``token``, else ``HF_TOKEN``, else the stored login), checked
    before anything is said or sent: offline mode is an :class:`OfflineError`, no token at all a
    :class:`HubError`. Nothing is asked of the Hub."""
    var = offline_variable()
    if var:
        shown = strip_credentials(hub_endpoint())
        raise OfflineError(f"cannot push to {shown}: offline mode is on ({var}=1)",
                           hint=f"unset {var} to push, or use --dry-run to see what would be sent")
    return _resolve_token(token)


def _resolve_token(token: str | None) -> str:
    if token is not None and token.strip():
        return token.strip()
    from huggingface_hub import get_token

    found = get_token()
    if not found:
        raise HubError("no Hugging Face token: pushing needs one with write access",
                       hint="pass --token, set HF_TOKEN, or run 'hf auth login'")
    return found


def send_push(plan: PushPlan, *, token: str | None = None,
              progress: ProgressFn = no_progress) -> PushResult:
    """Create the repo (and branch) if needed, then one commit with every file of ``plan``.

    Credentials in ``HF_ENDPOINT`` go to the Hub client only: every message and the result
    show the endpoint without them.
    """
    endpoint = hub_endpoint()
    shown = strip_credentials(endpoint)
    tok = push_token(token)

    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    api = HfApi(endpoint=endpoint, token=tok, library_name="msn-cli", library_version=__version__)
    hub = _Hub(shown, tok, plan.repo_id)
    result = PushResult(plan, shown)

    with hub.call("check the token"):
        result.user = api.whoami().get("name")
    repo_id = plan.repo_id

    with hub.call(f"look up {repo_id}"):
        try:
            existing = api.repo_info(repo_id)
        except RepositoryNotFoundError:
            existing = None
    if existing is None:
        with hub.call(f"create {repo_id}"):
            url = api.create_repo(repo_id, private=True if plan.private else None, exist_ok=True)
        result.repo_url, result.repo_created = strip_credentials(str(url)), True
    else:
        result.repo_url, result.repo_created = f"{shown}/{repo_id}", False
        if plan.private and not getattr(existing, "private", False):
            plan.warnings.append(f"{repo_id} already exists and is public: --private did not change it")

    rev = plan.revision
    if rev and rev != "main" and not rev.startswith("refs/"):
        with hub.call(f"create branch '{rev}' of {repo_id}"):
            api.create_branch(repo_id, branch=rev, exist_ok=True)

    progress("preparing", 0, plan.total_bytes)
    operations = []
    for f in plan.files:
        # the bytes or the open file that were hashed, never the path read again; the sha256
        # huggingface_hub takes of them is the one checked (and shown by a dry run), or nothing goes
        op = CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=f.content())
        digest = op.upload_info.sha256.hex()
        if digest != f.sha256:
            raise FolderError(f"{f.path} changed while preparing the upload (sha256 {digest[:12]}..., "
                              f"checked {f.sha256[:12]}...)", hint="nothing was sent; push again")
        operations.append(op)
    progress("preparing", plan.total_bytes, plan.total_bytes)

    progress("uploading", 0, plan.total_bytes)
    target = f"open a pull request on {repo_id}" if plan.create_pr else f"commit to {repo_id}"
    with hub.call(f"read the head of {rev or 'main'} in {repo_id}"):
        head = api.repo_info(repo_id, revision=rev or "main").sha
    with hub.call(target):
        info = api.create_commit(repo_id, operations, commit_message=plan.commit_message,
                                 commit_description=plan.commit_description, revision=rev,
                                 create_pr=plan.create_pr)
    progress("uploading", plan.total_bytes, plan.total_bytes)
    # huggingface_hub drops files the revision already holds byte for byte, and makes no
    # commit (nor pull request) when that is all of them: it then returns the head commit.
    result.changed = info.oid != head or info.pr_url is not None
    result.commit_url = strip_credentials(info.commit_url) if info.commit_url else info.commit_url
    result.commit_oid = info.oid
    result.pr_url = strip_credentials(info.pr_url) if info.pr_url else info.pr_url
    result.pr_num = info.pr_num
    return result


def push_folder(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    card_path: str | os.PathLike[str] | None = None,
    skip_verify_check: bool = False,
    dry_run: bool = False,
    license: str | None = None,
    progress: ProgressFn = no_progress,
) -> PushResult:
    """Check ``folder`` and publish it to ``repo_id`` in one commit; see the module docstring."""
    plan = plan_push(folder, repo_id, private=private, revision=revision, create_pr=create_pr,
                     commit_message=commit_message, card_path=card_path,
                     skip_verify_check=skip_verify_check, license=license, progress=progress)
    with contextlib.closing(plan):
        if dry_run:
            return PushResult(plan, hub_endpoint(), dry_run=True)
        return send_push(plan, token=token, progress=progress)
