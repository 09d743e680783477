"""A model folder fetched from the Hub by repo id: only the files msn reads, each size-capped.

``export`` from a repo id and ``verify --against`` read ``config.json`` and the weights
(``model.safetensors``, else the shards that ``model.safetensors.index.json`` names, else, where
the caller allows it, ``pytorch_model.bin``). Nothing else a repository holds is fetched, so a
repository cannot make msn download every file it carries or a file of any size: the Hub's
listing (:func:`list_files`: the model info with file metadata, which fetches no file) gives
each file's size first, and a file over its cap stops the fetch before a byte of it arrives.

A spec is a repo id only when it clearly is one (:func:`is_repo_id`); anything else that does
not exist locally is said to be missing, never sent to the Hub with the user's token.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from msn_cli.errors import NetworkError
from msn_cli.progress import ProgressFn, no_progress
from msn_cli.transfer.download.settings import MAX_SIZE, env_number
from msn_cli.util.safeio import read_json

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
PICKLE = "pytorch_model.bin"
JSON_MAX = 16 * 1024 * 1024
"""Bytes: the most ``config.json`` or the shard index may be (a ViT's is a few kB)."""
MAX_SHARDS = 1000

_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_REPO_ID = re.compile(rf"^{_PART}/{_PART}$")
_SHARD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}\.safetensors$")


def is_repo_id(spec: str) -> bool:
    """``org/name`` and nothing else: two plain parts (letters, digits, ``-``, ``_``, ``.``, not
    starting or ending with one of those marks), no ``./``, no trailing ``/``, no more parts, and
    not a checkpoint file name (``runs/latest.pth.tar`` is a missing file, not a repository)."""
    if not _REPO_ID.match(spec) or ".." in spec:
        return False
    return not spec.lower().endswith((".tar", ".pth", ".pt", ".bin", ".safetensors", ".json"))


def clearly_repo_id(spec: str) -> bool:
    """:func:`is_repo_id`, and nothing here answers to it: no file or folder ``spec`` and no
    folder named its first part (``runs/latest`` beside a ``runs/`` folder is a missing local
    path, never sent to the Hub with the user's token)."""
    return is_repo_id(spec) and not Path(spec).exists() and not Path(spec.split("/")[0]).exists()


def max_weights_size() -> int:
    """``MSN_DOWNLOAD_MAX_SIZE``, else 16 GiB: the most one weights file may be."""
    return int(env_number("MSN_DOWNLOAD_MAX_SIZE", MAX_SIZE))


def list_files(repo_id: str) -> tuple[str | None, dict[str, int | None]]:
    """The repository's commit and each of its files with its size (None where the Hub gives
    none), from ``HfApi.model_info(files_metadata=True)``: huggingface_hub 0.x (transformers
    4.57) and 1.x alike."""
    from huggingface_hub import HfApi

    info = HfApi().model_info(repo_id, files_metadata=True)
    return info.sha, {str(s.rfilename): s.size for s in info.siblings or []}


def fetch_model_folder(repo_id: str, *, allow_pickle: bool = False, extra_json: tuple[str, ...] = (),
                       progress: ProgressFn = no_progress, hint: str) -> Path:
    """The snapshot folder of ``repo_id`` with its config and weights (and the ``extra_json``
    files it lists, e.g. ``preprocessor_config.json``), fetched into the Hugging Face cache; a
    :class:`NetworkError` when the Hub cannot be reached (and nothing is cached), the repository
    is not a model msn can read, or a file is over its cap."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - a dependency
        raise NetworkError("huggingface_hub is not installed") from e
    progress("downloading " + repo_id, 0, None)
    wanted = [CONFIG, WEIGHTS, INDEX, *extra_json] + ([PICKLE] if allow_pickle else [])
    try:
        revision, listed = list_files(repo_id)
    except Exception as e:  # offline or unreachable: what an earlier fetch left, or the error
        try:
            return Path(str(snapshot_download(repo_id, allow_patterns=wanted, local_files_only=True)))
        except Exception:
            raise _fetch_error(repo_id, e, hint) from e
    if CONFIG not in listed:
        raise NetworkError(f"{repo_id} on the Hub has no {CONFIG}: not a Hugging Face model", hint=hint)
    get = functools.partial(_call, snapshot_download, repo_id, hint, revision=revision)
    if WEIGHTS in listed:
        files = [CONFIG, WEIGHTS]
    elif INDEX in listed:
        _cap(repo_id, INDEX, listed[INDEX], JSON_MAX)
        shards = _shards(repo_id, Path(str(get(allow_patterns=[INDEX]))) / INDEX)
        files = [CONFIG, INDEX, *shards]
    elif allow_pickle and PICKLE in listed:
        files = [CONFIG, PICKLE]
    else:
        raise NetworkError(f"{repo_id} on the Hub has no {WEIGHTS}, {INDEX}"
                           + (f" or {PICKLE}" if allow_pickle else ""), hint=hint)
    files += [name for name in extra_json if name in listed]
    for name in files:
        _cap(repo_id, name, listed.get(name), JSON_MAX if name.endswith(".json") else max_weights_size())
    folder = Path(str(get(allow_patterns=[f for f in files if f != INDEX])))  # it is there
    for name in files:  # what arrived is what was listed
        size = (folder / name).stat().st_size if (folder / name).exists() else None
        if size != listed.get(name):
            raise NetworkError(f"{repo_id}: {name} arrived with {size} bytes, not the "
                               f"{listed[name]:,} the Hub listed", hint=hint)
    return folder


def _fetch_error(repo_id: str, e: Exception, hint: str) -> NetworkError:
    return NetworkError(f"cannot fetch {repo_id} from the Hub: {type(e).__name__}: "
                        f"{(str(e).splitlines() or [''])[0][:200]}", hint=hint)


def _call(fn: Callable[..., Any], repo_id: str, hint: str, **kwargs: Any) -> Any:
    try:
        return fn(repo_id, **kwargs)
    except Exception as e:
        raise _fetch_error(repo_id, e, hint) from e


def _cap(repo_id: str, name: str, size: int | None, limit: int) -> None:
    if size is None:
        raise NetworkError(f"the Hub gave no size for {name} in {repo_id}; msn does not fetch a "
                           "file of unknown size", hint="try again later, or download the folder "
                                                        "yourself and give its path")
    if size > limit:
        raise NetworkError(f"{name} in {repo_id} is {size:,} bytes, more than msn fetches for it "
                           f"({limit:,})", hint="download the folder yourself and give its path"
                           + ("" if name.endswith(".json") else ", or raise MSN_DOWNLOAD_MAX_SIZE"))


def _shards(repo_id: str, index: Path) -> list[str]:
    """The shard files the index's ``weight_map`` names: plain ``*.safetensors`` names only."""
    try:
        record = read_json(index, follow_links=False)
    except (OSError, ValueError) as e:
        raise NetworkError(f"{repo_id}: cannot read {INDEX}: {e}") from None
    weight_map = record.get("weight_map") if isinstance(record, dict) else None
    if not isinstance(weight_map, dict):
        raise NetworkError(f"{repo_id}: {INDEX} has no weight_map")
    names = sorted({v for v in weight_map.values() if isinstance(v, str)})
    bad = [n for n in names if not _SHARD.match(n)]
    if bad or not names or len(names) > MAX_SHARDS or len(names) != len(set(weight_map.values())):
        shown = json.dumps(bad[0]) if bad else f"{len(names)} shard names"
        raise NetworkError(f"{repo_id}: {INDEX} names {shown}; msn fetches only plain "
                           f"*.safetensors files beside it (at most {MAX_SHARDS})")
    return names
