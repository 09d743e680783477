"""A Hugging Face model folder as msn reads it: its JSON files, ``config.json`` typed and
bounded, and the weights files ``from_pretrained`` would load.

``verify`` reads folders that anyone may have made (the folder under test, the ``--against``
folder). The rules here keep such a folder from costing more than its own size or from
fooling a comparison:

- JSON files are read only when regular, capped and depth-bounded (:mod:`msn_cli.util.safeio`);
- ``config.json``'s architecture values are integers within :data:`CONFIG_BOUNDS`, and its
  depth is the weights header's (:func:`config_architecture`), before anything is built
  from them: a config claiming a million layers is refused, not instantiated;
- the weights are the files ``from_pretrained`` picks (:func:`weights_files`), never a glob:
  a decoy ``*.safetensors`` beside them is not read.

A converted folder (the one verify checks and push publishes) may hold only the files of
:data:`ALLOWED_FILES`, and none of the JSON files transformers reads may name code to run
(:func:`folder_files_problem`): nothing from a folder is ever executed, and push publishes
exactly what verify saw.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from msn_cli.errors import ConfigError, FolderError
from msn_cli.hf.manifest import CONFIG, MANIFEST, PREPROCESSOR
from msn_cli.original.architecture import Architecture
from msn_cli.util import safeio

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
BIN_WEIGHTS = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
CARD = "README.md"
PROCESSOR_CONFIG = "processor_config.json"

ALLOWED_FILES: tuple[str, ...] = (SAFE_WEIGHTS, CONFIG, PREPROCESSOR, MANIFEST, CARD)
"""Every name a converted folder may hold: the four files ``convert`` writes (``verify`` writes
only into the manifest) and the model card, which a folder fetched from the Hub carries. Push
never uploads the folder's own card: it generates one."""

UPLOADED_FILES: tuple[str, ...] = (SAFE_WEIGHTS, CONFIG, PREPROCESSOR)
"""The files push uploads from the folder, as the manifest lists them; it writes the manifest
and the card itself."""

CODE_KEYS = ("auto_map", "custom_pipelines")
"""Keys by which transformers finds code in a model folder (``trust_remote_code``)."""

CODE_CHECKED: tuple[str, ...] = (CONFIG, PREPROCESSOR, PROCESSOR_CONFIG)
"""The JSON files transformers reads to pick a model, config or image processor class:
``processor_config.json`` before ``preprocessor_config.json``."""

CONFIG_BOUNDS: dict[str, tuple[str, int, int]] = {
    # Architecture field: (config.json key, least, most). Generous: the largest MSN model
    # (ViT-L/7) is 1024 wide, 24 deep, 4096 MLP, 224 px; these only stop absurd values early.
    "hidden_size": ("hidden_size", 1, 65_536),
    "num_layers": ("num_hidden_layers", 1, 1_024),
    "num_heads": ("num_attention_heads", 1, 65_536),
    "intermediate_size": ("intermediate_size", 1, 262_144),
    "patch_size": ("patch_size", 1, 4_096),
    "image_size": ("image_size", 1, 16_384),
    "num_channels": ("num_channels", 1, 64),
}


def read_json_object(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(object, None)``, or ``(None, why)`` when ``path`` is missing, not a regular file,
    too large, too deep, not JSON or not an object (``why`` starts with the file's name)."""
    name = path.name
    try:
        data = safeio.read_json(path)
    except FileNotFoundError:
        return None, f"{name} is missing"
    except safeio.UnsafeInput as e:
        return None, f"{name} cannot be read ({str(e).replace(str(path), 'it')})"
    except (ValueError, UnicodeDecodeError) as e:
        return None, f"{name} is not valid JSON ({e})"
    except OSError as e:
        return None, f"{name} cannot be read ({e.strerror or e})"
    if not isinstance(data, dict):
        return None, f"{name} is not a JSON object"
    return data, None


_LAYER = re.compile(r"^(?:vit\.)?encoder\.layer\.(\d+)\.")


def header_depth(header: dict[str, Any]) -> int:
    """How many transformer blocks a weights header holds (from its tensor names)."""
    return len({m.group(1) for k in header if (m := _LAYER.match(k))})


def header_width(header: dict[str, Any]) -> int | None:
    """The hidden size a weights header holds (the cls token's last dimension), if it says."""
    for key in ("embeddings.cls_token", "vit.embeddings.cls_token"):
        shape = (header.get(key) or {}).get("shape")
        if shape:
            return int(shape[-1])
    return None


def config_architecture(config: dict[str, Any], header: dict[str, Any] | None = None) -> Architecture:
    """The architecture ``config.json`` describes, checked before anything is built from it.

    Every value is an integer within :data:`CONFIG_BOUNDS`; the heads divide the width; the
    patch fits the image; and, given the weights ``header``, the depth is the header's.
    Raises :class:`ConfigError` naming the first value that is not so.
    """
    values: dict[str, int] = {}
    for field, (key, least, most) in CONFIG_BOUNDS.items():
        if key not in config and key == "num_channels":
            values[field] = 3
            continue
        v = config.get(key)
        if key not in config:
            raise ConfigError(f"config.json has no {key}")
        if not isinstance(v, int) or isinstance(v, bool):
            raise ConfigError(f"config.json {key} is {v!r:.40}, not a whole number")
        if not least <= v <= most:
            raise ConfigError(f"config.json {key} {v} is outside {least}..{most}")
        values[field] = v
    if values["hidden_size"] % values["num_heads"]:
        raise ConfigError(f"config.json num_attention_heads {values['num_heads']} does not divide "
                          f"hidden_size {values['hidden_size']}")
    if values["patch_size"] > values["image_size"]:
        raise ConfigError(f"config.json patch_size {values['patch_size']} is larger than image_size "
                          f"{values['image_size']}")
    if header is not None:
        depth = header_depth(header)
        if values["num_layers"] != depth:
            raise ConfigError(f"config.json says num_hidden_layers {values['num_layers']}, the "
                              f"weights hold {depth}")
        width = header_width(header)
        if width is not None and values["hidden_size"] != width:
            raise ConfigError(f"config.json says hidden_size {values['hidden_size']}, the weights "
                              f"are {width} wide")
    qkv_bias = config.get("qkv_bias", True)
    if not isinstance(qkv_bias, bool):
        raise ConfigError(f"config.json qkv_bias is {qkv_bias!r:.40}, not true or false")
    return Architecture(**values, qkv_bias=qkv_bias)


def weights_files(folder: Path) -> tuple[list[Path], dict[str, str] | None]:
    """The files ``from_pretrained`` loads ``folder``'s weights from, and the shard index.

    In transformers' order: ``model.safetensors``; else the shards that
    ``model.safetensors.index.json`` lists (with its ``weight_map``, tensor -> shard);
    else ``pytorch_model.bin``. A name that is there but not a regular file is not skipped
    for the next one: the caller refuses it. Raises :class:`FolderError` (exit 3) for a
    folder with none of them, or an index that is not one.
    """
    if _there(folder / SAFE_WEIGHTS):
        return [folder / SAFE_WEIGHTS], None
    index = folder / SAFE_INDEX
    if _there(index):
        data, err = read_json_object(index)
        if data is None:
            raise FolderError(f"{folder}: {err}")
        weight_map = data.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise FolderError(f"{index} has no weight_map (tensor -> shard file)")
        shards: dict[str, Path] = {}
        for key, shard in weight_map.items():
            try:
                shards.setdefault(shard, folder / safeio.safe_name(shard))
            except (safeio.UnsafeInput, TypeError):
                raise FolderError(f"{index} puts {key!r:.80} in {shard!r:.80}, which is not a file "
                                  "of the folder") from None
        return list(shards.values()), weight_map
    if _there(folder / BIN_WEIGHTS):
        return [folder / BIN_WEIGHTS], None
    if _there(folder / BIN_INDEX):
        raise FolderError(f"{folder} holds sharded pytorch_model.bin weights, which msn does not read",
                          hint="save the model with safetensors (save_pretrained's default)")
    raise FolderError(f"{folder} holds no model weights ({SAFE_WEIGHTS}, {SAFE_INDEX} or {BIN_WEIGHTS})")


def _there(path: Path) -> bool:
    """True for anything under that name, a dangling link or a FIFO included."""
    return path.is_symlink() or path.exists()


def foreign_files(folder: Path) -> list[str]:
    """The names in ``folder`` that are not of :data:`ALLOWED_FILES` (sorted; the entries are
    listed, never followed)."""
    allowed = set(ALLOWED_FILES)
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.name not in allowed)


def code_references(folder: Path) -> list[str]:
    """Where the JSON files of :data:`CODE_CHECKED` name code for transformers to run:
    ``processor_config.json: image_processor.auto_map`` (an unreadable file is left to the
    checks that read it; none of them hands it to transformers)."""
    found = []
    for name in CODE_CHECKED:
        data, _ = read_json_object(folder / name) if os.path.lexists(folder / name) else (None, None)
        if data is not None:
            found += [f"{name}: {where}" for where in _code_keys(data, "")]
    return found


def _code_keys(value: object, where: str) -> Iterator[str]:
    """The paths of every :data:`CODE_KEYS` key in a JSON value (its depth is capped on reading)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            path = f"{where}.{key}" if where else str(key)
            if key in CODE_KEYS:
                yield path
            else:
                yield from _code_keys(inner, path)
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from _code_keys(inner, f"{where}[{i}]")


def folder_files_problem(folder: Path, listed: Iterable[str] = ()) -> str | None:
    """Why ``folder`` may be neither verified nor published, or None: a file that is not of
    :data:`ALLOWED_FILES` in the folder, or not of :data:`UPLOADED_FILES` in its manifest's
    file table ``listed``, or code named in a JSON file transformers reads. One line, naming
    each file and key."""
    problems = []
    for names, what, allowed in (
            (foreign_files(folder), "holds", ALLOWED_FILES),
            (sorted(n for n in listed if n not in UPLOADED_FILES), "lists in its manifest", UPLOADED_FILES)):
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            problems.append(f"{what} {shown}, not a file of a converted folder (only "
                            f"{', '.join(allowed)})")
    code = code_references(folder)
    if code:
        problems.append(f"names code to run ({'; '.join(code[:5])}), which msn never runs")
    return "; ".join(problems) or None
