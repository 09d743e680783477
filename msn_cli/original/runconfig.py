"""A training run's ``params-msn-train.yaml``: read safely, and what of it may be published.

The original ``main.py`` writes the whole config a run used into the run's logging folder,
beside ``{tag}-latest.pth.tar`` and ``{tag}-ep{N}.pth.tar``. It names the constructor of the
model family (``meta.model_name``) and holds the hyperparameters that describe the model and
the run. It also holds local paths (``data.root_path``, ``data.image_folder``,
``logging.folder``, ``meta.read_checkpoint``): those are never read into anything here.

The file is untrusted input. It is read with ``yaml.safe_load`` (no Python tags), at most
:data:`MAX_BYTES`, and only the fields of :data:`FIELDS` are taken, each checked for its type. Anything else
raises :class:`~msn_cli.errors.ConfigError` (exit 3) with a one-line message naming the file.
Key names are those of the original ``configs/pretrain/*.yaml`` and ``src/msn_train.py`` (facts
in ``shared/msn-facts.md``); no code is taken from the original repository.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from msn_cli.errors import ConfigError

CONFIG_NAME = "params-msn-train.yaml"
"""The name the original ``main.py`` gives the config it dumps into a run's folder."""

MAX_BYTES = 1 << 20
"""A real config is about 1 kB; anything over 1 MiB is not one (and would be slow to parse)."""

MAX_INT = 2**63
"""Whole numbers are below this: past it ``float()`` may overflow and no setting is that large."""

SECTIONS = ("meta", "criterion", "data", "optimization", "logging")

Kind = Literal["int", "float", "number", "bool", "name"]


@dataclass(frozen=True)
class Field:
    """One published hyperparameter: where it sits in the YAML, its type, its card label."""

    section: str
    key: str
    kind: Kind
    label: str
    group: str


FIELDS: tuple[Field, ...] = (
    Field("meta", "model_name", "name", "Model constructor", "Model"),
    Field("meta", "drop_path_rate", "float", "Drop-path rate", "Model"),
    Field("meta", "output_dim", "int", "Projection head output size", "Projection head"),
    Field("meta", "hidden_dim", "int", "Projection head hidden size", "Projection head"),
    Field("meta", "use_bn", "bool", "Projection head BatchNorm", "Projection head"),
    Field("meta", "use_pred_head", "bool", "Prediction head", "Projection head"),
    Field("meta", "two_layer", "bool", "Two-layer projection head", "Projection head"),
    Field("meta", "bottleneck", "int", "Projection head bottleneck", "Projection head"),
    Field("meta", "use_fp16", "bool", "Mixed precision (fp16)", "Optimisation"),
    Field("optimization", "epochs", "int", "Epochs (configured)", "Optimisation"),
    Field("criterion", "batch_size", "int", "Batch size (per process)", "Optimisation"),
    Field("optimization", "lr", "float", "Learning rate (peak)", "Optimisation"),
    Field("optimization", "start_lr", "float", "Learning rate at start of warm-up", "Optimisation"),
    Field("optimization", "final_lr", "float", "Final learning rate", "Optimisation"),
    Field("optimization", "warmup", "number", "Warm-up epochs", "Optimisation"),
    Field("optimization", "weight_decay", "float", "Weight decay (start)", "Optimisation"),
    Field("optimization", "final_weight_decay", "float", "Weight decay (final)", "Optimisation"),
    Field("optimization", "clip_grad", "float", "Gradient clipping (norm)", "Optimisation"),
    Field("criterion", "num_proto", "int", "Prototypes", "Prototypes and loss"),
    Field("criterion", "freeze_proto", "bool", "Prototypes frozen", "Prototypes and loss"),
    Field("criterion", "temperature", "float", "Temperature", "Prototypes and loss"),
    Field("criterion", "start_sharpen", "float", "Target sharpening (start)", "Prototypes and loss"),
    Field("criterion", "final_sharpen", "float", "Target sharpening (final)", "Prototypes and loss"),
    Field("criterion", "me_max", "bool", "Mean-entropy maximisation (me-max)", "Prototypes and loss"),
    Field("criterion", "memax_weight", "float", "me-max weight", "Prototypes and loss"),
    Field("criterion", "use_ent", "bool", "Entropy regulariser", "Prototypes and loss"),
    Field("criterion", "ent_weight", "float", "Entropy weight", "Prototypes and loss"),
    Field("criterion", "use_sinkhorn", "bool", "Sinkhorn-Knopp", "Prototypes and loss"),
    Field("data", "rand_size", "int", "Random crop size (px)", "Views and masking"),
    Field("data", "rand_views", "int", "Random views (besides the target view)", "Views and masking"),
    Field("data", "focal_size", "int", "Focal crop size (px)", "Views and masking"),
    Field("data", "focal_views", "int", "Focal views", "Views and masking"),
    Field("data", "patch_drop", "float", "Patch drop (masking ratio)", "Views and masking"),
    Field("data", "color_jitter_strength", "float", "Colour jitter strength", "Views and masking"),
    Field("data", "label_smoothing", "float", "Label smoothing", "Views and masking"),
)
"""Every value of the YAML that may be recorded and published, in the card's order. Nothing
outside this table is ever taken from the file: in particular none of :data:`NEVER_PUBLISHED`."""

FIELD_BY_KEY: dict[str, Field] = {f.key: f for f in FIELDS}

NEVER_PUBLISHED = ("data.root_path", "data.image_folder", "logging.folder", "meta.read_checkpoint")
"""The config's local paths (documentation and tests; the whitelist above is what enforces it)."""

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.+-]{0,99}")


def looks_like_path(value: Any) -> bool:
    """True for a string that could name a file or folder on someone's machine."""
    if not isinstance(value, str):
        return False
    v = value.strip()
    return ("/" in v or "\\" in v or v.startswith(("~", ".")) or bool(re.match(r"[A-Za-z]:", v)))


@dataclass(frozen=True)
class RunConfig:
    """The checked, publishable part of a run's config.

    ``path`` is where it was read from: a local path, for messages only; never recorded.
    ``values`` holds the :data:`FIELDS` present in the file, in that table's order.
    """

    path: Path
    model_name: str | None
    write_tag: str | None
    values: tuple[tuple[str, Any], ...]

    def training(self) -> dict[str, Any]:
        """The hyperparameters that describe the model and the run (flat, original key names).

        Only fields of :data:`FIELDS` that the file holds; never a local path.
        """
        return dict(self.values)

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.values).get(key, default)


def find_run_config(checkpoint_path: str | os.PathLike[str]) -> Path | None:
    """The ``params-msn-train.yaml`` beside a checkpoint (or inside a run folder), if any."""
    p = Path(checkpoint_path)
    folder = p if p.is_dir() else p.parent
    cand = folder / CONFIG_NAME
    return cand if cand.is_file() else None


# -- reading -------------------------------------------------------------------------------------

def _yaml_problem(e: Exception) -> str:
    problem = getattr(e, "problem", None) or getattr(e, "context", None)
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    text = str(problem) if problem else (str(e).strip().splitlines() or [type(e).__name__])[0]
    text = " ".join(text.split())
    if mark is not None:
        text += f" (line {mark.line + 1}, column {mark.column + 1})"
    return text


def _read_text(path: Path) -> str:
    """The file's text: a regular file of at most :data:`MAX_BYTES`, UTF-8."""
    from msn_cli.util.safeio import UnsafeInput, open_regular

    try:
        with open_regular(path) as f:  # a FIFO or device is refused before a byte is read
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"training config not found: {path}",
                          hint=f"give the run's {CONFIG_NAME} (or leave --config out)") from None
    except UnsafeInput as e:
        raise ConfigError(f"training config {e}") from None
    except OSError as e:
        raise ConfigError(f"cannot read training config {path}: {e.strerror or e}") from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"training config {path} is over {MAX_BYTES // 1024} kB: not an MSN config",
                          hint=f"a run's {CONFIG_NAME} is about 1 kB")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"training config {path} is not UTF-8 text (byte {e.start})") from None


def parse_yaml(path: Path) -> Any:
    """The YAML document in ``path`` (``yaml.safe_load`` on the size-capped text); ConfigError
    on any problem.

    ``safe_load`` constructs no Python object from a tag, and an alias is one shared object,
    never a copy, so an alias bomb stays a few objects; only :data:`FIELDS` are ever read from
    the result, each checked for its type. Nesting deeper than the parser can recurse is
    refused (``RecursionError``).
    """
    import yaml

    text = _read_text(path)
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(f"refused training config {path}: YAML nested more than the parser "
                          "can follow", hint="a run's config is a small plain mapping") from None
    except yaml.constructor.ConstructorError as e:
        raise ConfigError(f"refused training config {path}: it is not plain YAML data: {_yaml_problem(e)}",
                          hint="msn never constructs Python objects from YAML tags") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"training config {path} is not valid YAML: {_yaml_problem(e)}") from None
    except (ValueError, TypeError, OverflowError) as e:
        # e.g. an integer with more digits than Python converts
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"training config {path} holds a value that cannot be read: {first}") from None


def _check(path: Path, where: str, f: Field, value: Any) -> Any:
    def bad(expected: str) -> ConfigError:
        shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return ConfigError(f"training config {path}: {where} is {shown}, expected {expected}")

    if f.kind == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if f.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_INT:
            raise bad("a whole number from 0 to 2**63 - 1")
        return value
    if f.kind in ("float", "number"):
        if isinstance(value, str):  # PyYAML reads 1e-6 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise bad("a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or (isinstance(value, int) and abs(value) >= MAX_INT) or not math.isfinite(value):
            raise bad("a finite number")  # an int past 2**63 is out of a hyperparameter's range
        return float(value) if f.kind == "float" else value
    # a constructor name: a short identifier, never anything like a path
    if not isinstance(value, str) or not _NAME.fullmatch(value) or looks_like_path(value):
        raise bad("a constructor name such as deit_small")
    return value


def read_run_config(path: str | os.PathLike[str]) -> RunConfig:
    """Read and check a run's ``params-msn-train.yaml``; ConfigError (exit 3) on any problem."""
    p = Path(path)
    doc = parse_yaml(p)
    if not isinstance(doc, dict):
        kind = "empty" if doc is None else f"a {type(doc).__name__}, not a mapping"
        raise ConfigError(f"training config {p} is {kind}: not an MSN training config",
                          hint=f"a run's {CONFIG_NAME} maps {', '.join(SECTIONS)} to their settings")
    present = [s for s in SECTIONS if s in doc]
    if not present:
        raise ConfigError(f"training config {p} has none of the sections {', '.join(SECTIONS)}: "
                          "not an MSN training config")
    for s in present:
        if not isinstance(doc[s], dict):
            raise ConfigError(f"training config {p}: section '{s}' is a {type(doc[s]).__name__}, "
                              "not a mapping")
    values: list[tuple[str, Any]] = []
    for f in FIELDS:
        section = doc.get(f.section)
        if not isinstance(section, dict) or f.key not in section:
            continue
        values.append((f.key, _check(p, f"{f.section}.{f.key}", f, section[f.key])))
    tag = (doc.get("logging") or {}).get("write_tag")
    if tag is not None:
        if isinstance(tag, bool) or not isinstance(tag, (str, int)):
            raise ConfigError(f"training config {p}: logging.write_tag is a {type(tag).__name__}, "
                              "expected a name")
        tag = str(tag)
        if looks_like_path(tag) or not tag.strip():
            tag = None  # it prefixes file names in one folder; one with separators is not usable
    found = dict(values)
    return RunConfig(path=p, model_name=found.get("model_name"), write_tag=tag, values=tuple(values))


def publishable(training: dict[str, Any]) -> dict[str, Any]:
    """Of a recorded training dict (a manifest's ``training``, which anyone may have edited),
    only the fields of :data:`FIELDS` with plain values that are not paths, in table order."""
    out: dict[str, Any] = {}
    for f in FIELDS:
        v = training.get(f.key)
        if v is None or isinstance(v, (dict, list)) or not isinstance(v, (str, int, float, bool)):
            continue
        if isinstance(v, str) and (looks_like_path(v) or f.kind != "name" or not _NAME.fullmatch(v)):
            continue
        out[f.key] = v
    return out
