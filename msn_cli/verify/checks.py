"""``verify``: prove that a converted folder computes what the original network computes.

Checks, in order (each one passes, fails, or is skipped; a failed check is a result, never an
exception -- exceptions mean verify could not run at all):

``files``
    Every file the manifest lists is there with its recorded size and sha256; the three files
    a ``ViTMSNModel`` folder needs exist; ``config.json`` and the ``model.safetensors`` header
    agree (every key the config implies, at the shape it implies, nothing else, one dtype that
    is the config's and the manifest's).
``loading``
    ``ViTMSNModel.from_pretrained(folder, output_loading_info=True)`` with the installed
    transformers reports no missing, unexpected or mismatched keys and no load errors.
``config``
    Every configuration value that changes the computation (model type, hidden size, layers,
    heads, MLP size, patch size, image size, channels, activation -- exact erf GELU --,
    LayerNorm eps, qkv bias), as transformers reads it from the folder, equals what the source
    checkpoint implies (:func:`msn_cli.original.checkpoint.infer_architecture`); and the image
    processor's settings (size, bilinear, 1/255, ImageNet mean/std). Values the weights do
    not hold (heads, eps, activation) are resolved independently of the folder's own
    ``config.json`` (the user, the run's config, the original model family, what the
    manifest records as given; else assumed: see :mod:`msn_cli.conversion.provenance`), and each row
    says where its expected value came from: such values are checked only against what msn
    knows or assumes, and parity, which runs the reference with the same values, cannot
    confirm them further. Parity alone need not
    catch e.g. ``layer_norm_eps`` 1e-5 instead of 1e-6: on real activations its effect is
    below float32 noise.
``parity``
    The independent reference (:mod:`msn_cli.original.reference`, float32, on the source checkpoint's
    own tensors in their original names) and the converted model (in the folder's dtype) run on
    the same deterministic inputs -- a seeded normal-noise image and a smooth
    natural-image-like image (low-frequency noise, 8-bit quantised, ImageNet-normalised) -- at
    two sizes (:func:`parity_inputs`). At the native size the embeddings (``hidden_states[0]``:
    patch projection, class token, the position embeddings as stored) are compared on all
    tokens; at a smaller size with position interpolation (:func:`depth_size`) every layer's
    output is compared on all tokens: the embeddings, each block (``hidden_states[i + 1]``
    against ``blocks.i``) and the final norm (``last_hidden_state``). Only the embeddings
    depend on the size, so the full depth, which holds every other weight, costs a fraction
    of a native pass. Both models' weights are memory-mapped from their files, and each
    module's pages are handed back after it has run (:mod:`msn_cli.util.residency`): verify holds
    about one layer of each model at a time. The reference runs first (:func:`reference_pass`)
    while transformers is still being imported in a thread (:func:`preload_transformers`).
    The first layer over tolerance is named.
``preprocessing``
    The folder's image processor, loaded as a user loads it, against an independent
    implementation of the transform it declares (MSN's own evaluation transform by default),
    on real photographs and every ``--image``: see :mod:`msn_cli.verify.preprocessing`.
``golden``
    Only for the five released variants, when the source is known to be the released file,
    with ``--image`` (COCO val2017 000000039769): the
    seed's preprocessing and ``last_hidden_state[0, 0, :3]`` against its published values.
``image``
    Only with ``--image``: the photo through the folder's processor and the converted model
    against the independent transform and reference (:mod:`msn_cli.verify.preprocessing`).
``against``
    Only with ``--against``: tensor-by-tensor comparison with another Hugging Face folder or
    Hub repository (key diff, shapes, values), plus the computation-relevant config values.

Tolerances (parity), per layer ``l`` with ``scale_l = max(1, max |reference_l|)`` over all
inputs of one size::

    max |hf_l - reference_l|  <=  atol[dtype] * scale_l      and
    min over tokens of cosine(hf_l, reference_l)  >=  cosine_min[dtype]

==========  ========  ===========  ==================================================
dtype       atol      cosine_min   why
==========  ========  ===========  ==================================================
float32     1e-5      0.99999      same weights, only the order of float32 operations
                                   differs (fused vs split qkv, SDPA vs explicit
                                   softmax): measured 1-3e-7 relative on tiny models
float16     1e-2      0.9995       weights rounded to 11 bits, computed in float16:
                                   relative rounding 2^-11 per operation, accumulating
bfloat16    6e-2      0.998        8-bit mantissa: relative rounding 2^-8 per operation
==========  ========  ===========  ==================================================

In float32 a change of 1e-3 to any one weight tensor is ~50x over tolerance on the test
models; in float16/bfloat16 parity catches structural errors (a swapped or transposed
matrix, a wrong split) but not a 1e-3 perturbation, which is below their own rounding -- the
``files`` hashes and ``--against`` cover bit-level identity there.

The smaller size: the original resizes the position grid by ``scale_factor=sqrt(npatch/N)``,
transformers to an explicit ``(H/P, W/P)``. Where ``floor(g * sqrt(n^2/g^2)) == n`` both give
the same grid at the same sampling positions and agree to float rounding, so the smaller size
is held to the same tolerance; :func:`msn_cli.original.reference.other_grid` picks such a size (the
native grid halved until at most 8 patches a side, e.g. 112 px for the 224 px /16 models,
56 px for ViT-L/7, 28 px for ViT-B/4).

Golden tolerance: 1e-4 in float32 (the seed's), ``atol[dtype] * max(1, max|expected|)`` in
float16/bfloat16.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msn_cli import __version__
from msn_cli.conversion import mapping
from msn_cli.conversion.provenance import HEADS, Known, Provenance, assumed_warning, run_context
from msn_cli.errors import EXIT_BAD_INPUT, CheckpointError, FolderError, MsnError, NetworkError
from msn_cli.hf.folder import SAFE_INDEX, ConfigError, config_architecture, read_json_object, weights_files
from msn_cli.hf.folder import SAFE_WEIGHTS as WEIGHTS
from msn_cli.hf.manifest import (
    CONFIG,
    MANIFEST,
    PREPROCESSOR,
    read_manifest,
    regular_file_problem,
    write_manifest,
)
from msn_cli.hf.manifest import check_files as check_listed_files
from msn_cli.hf.safetensors_io import HeaderError, read_header
from msn_cli.original.architecture import IMAGENET_MEAN, IMAGENET_STD, LAYER_NORM_EPS, Architecture
from msn_cli.original.checkpoint import Checkpoint, infer_architecture, load_checkpoint
from msn_cli.original.variants import VARIANTS, Variant, match_variant
from msn_cli.progress import ProgressFn, no_progress
from msn_cli.util import safeio
from msn_cli.util.hashing import sha256_file
from msn_cli.util.residency import PageReleaser

if TYPE_CHECKING:
    import torch

    from msn_cli.transfer.sources import ResolvedSource

CHECK_NAMES = ("files", "loading", "config", "parity", "preprocessing", "golden", "image", "against")


@dataclass(frozen=True)
class Tolerance:
    atol: float
    """Allowed max abs error as a fraction of ``max(1, max|reference|)`` of the layer."""
    cosine_min: float

    def to_dict(self) -> dict[str, Any]:
        return {"atol": self.atol, "cosine_min": self.cosine_min,
                "atol_scaled_by": "max(1, max|reference|) of each layer"}


TOLERANCES: dict[str, Tolerance] = {
    "float32": Tolerance(1e-5, 0.99999),
    "float16": Tolerance(1e-2, 0.9995),
    "bfloat16": Tolerance(6e-2, 0.998),
}
GOLDEN_ATOL_FLOAT32 = 1e-4
GOLDEN_IMAGE_SIZE = 224

# Configuration values that change what the network computes, as ViTMSNConfig names them.
RELEVANT_CONFIG = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
                   "intermediate_size", "patch_size", "image_size", "num_channels", "hidden_act",
                   "layer_norm_eps", "qkv_bias")

_ST_TO_TORCH = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64",
                "I64": "int64", "I32": "int32", "U8": "uint8", "BOOL": "bool"}


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------

@dataclass
class CheckResult:
    name: str
    passed: bool | None  # None: skipped
    detail: str
    numbers: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    """Per-item rows (files, config keys, key diff) for the CLI and --json; not in the manifest."""

    @property
    def status(self) -> str:
        return {True: "passed", False: "FAILED", None: "skipped"}[self.passed]

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail, **self.numbers}

    def to_dict(self) -> dict[str, Any]:
        return {**self.record(), "rows": self.rows}


@dataclass
class LayerStat:
    """One layer's comparison at one input size, over all inputs of that size."""

    index: int  # 0 embeddings, 1..L blocks, L+1 final norm
    name: str
    hf: str
    original: str
    size: int
    max_abs_err: float
    mean_abs_err: float
    min_cosine: float
    scale: float
    allowed: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class VerifyReport:
    folder: Path
    dtype: str | None
    tolerance: Tolerance | None
    checks: list[CheckResult]
    layers: list[LayerStat] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)
    variant: str | None = None
    notes: list[str] = field(default_factory=list)
    date: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    provenance: list[Provenance] = field(default_factory=list)
    """Where the values verify expects but the weights do not hold came from."""

    @property
    def passed(self) -> bool:
        """True when no check that ran failed (and at least one ran)."""
        ran = [c for c in self.checks if c.passed is not None]
        return bool(ran) and all(c.passed for c in ran)

    def check(self, name: str) -> CheckResult | None:
        return next((c for c in self.checks if c.name == name), None)

    @property
    def first_bad_layer(self) -> LayerStat | None:
        bad = [s for s in self.layers if not s.passed]
        return min(bad, key=lambda s: (s.index, s.size != self._native_size)) if bad else None

    @property
    def _native_size(self) -> int | None:
        return self.layers[0].size if self.layers else None

    def summary(self) -> str:
        parity = self.check("parity")
        parts = []
        ok = [c.name for c in self.checks if c.passed]
        bad = [c for c in self.checks if c.passed is False]
        if bad:
            parts.append("FAILED " + "; ".join(f"{c.name} ({c.detail})" for c in bad))
            if ok:
                parts.append("passed " + ", ".join(ok))
            return "; ".join(parts)
        text = ", ".join(ok)
        if parity is not None and parity.passed:
            n = parity.numbers
            what = n.get("coverage") or f"{n['layers']} layers x {n['inputs']} inputs"
            text += (f": {what}, max abs err "
                     f"{n['max_abs_err']:.1e} (tol {n['tolerance']:.0e} x layer scale)")
        skipped = [c.name for c in self.checks if c.passed is None]
        if skipped:
            text += f"; skipped {', '.join(skipped)}"
        return text

    def manifest_record(self) -> dict[str, Any]:
        """What ``record_in_manifest`` stores (the schema push and the model card read)."""
        return {
            "passed": self.passed,
            "summary": self.summary(),
            "date": self.date,
            "msn_version": self.versions.get("msn", __version__),
            "transformers_version": self.versions.get("transformers"),
            "torch_version": self.versions.get("torch"),
            "dtype": self.dtype,
            "tolerance": {"atol": self.tolerance.atol, "cosine_min": self.tolerance.cosine_min}
            if self.tolerance else None,
            "checks": [c.record() for c in self.checks],
            "provenance": [p.to_dict() for p in self.provenance],
            "assumed": [p.key for p in self.provenance if p.assumed],
        }

    def to_dict(self) -> dict[str, Any]:
        first = self.first_bad_layer
        return {
            **self.manifest_record(),
            "folder": str(self.folder),
            "variant": self.variant,
            "source": self.source,
            "tolerance": self.tolerance.to_dict() if self.tolerance else None,
            "checks": [c.to_dict() for c in self.checks],
            "first_bad_layer": first.name if first else None,
            "layers": [s.to_dict() for s in self.layers],
            "inputs": self.inputs,
            "notes": self.notes,
        }


def record_in_manifest(folder: str | os.PathLike[str], report: VerifyReport) -> dict[str, Any]:
    """Store ``report`` as ``manifest["verify"]`` (the files' hashes do not cover the manifest)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    record = report.manifest_record()
    manifest["verify"] = record
    write_manifest(folder, manifest)
    return record


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _versions() -> dict[str, str]:
    """The versions verify runs under; the first import of torch and transformers (with
    Ctrl-C held back until both are in, see :mod:`msn_cli.util.interrupts`)."""
    from msn_cli.original.checkpoint import import_torch
    from msn_cli.util.interrupts import deferred

    torch = import_torch()
    with deferred():
        import transformers

    return {"msn": __version__, "transformers": transformers.__version__,
            "torch": str(torch.__version__)}


_PRELOAD: list[Any] = []


def preload_transformers() -> None:
    """Start importing transformers' ``ViTMSNModel`` in a daemon thread (once per process).

    That import is the largest fixed cost of verify (2.3 s and 110 MB on top of torch here:
    transformers pulls in ``torch.distributed.tensor`` and ``torch._dynamo``). Started as soon as torch is in,
    it runs while the source is read, the folder written and hashed and the reference run:
    work that mostly leaves the interpreter free (file I/O, hashing, torch kernels). Verify's
    own import then finds it done, or waits on the import lock for the rest. Any error is
    left for that import to raise.
    """
    import threading

    if _PRELOAD:
        return

    def run() -> None:
        with contextlib.suppress(BaseException):
            from transformers import ViTMSNModel  # noqa: F401

    thread = threading.Thread(target=run, name="msn-import-transformers", daemon=True)
    _PRELOAD.append(thread)
    thread.start()


def _could_not_run(message: str, hint: str | None = None) -> MsnError:
    return MsnError(message, hint, exit_code=EXIT_BAD_INPUT)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' warnings and its per-load progress bar while verify uses it."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = getattr(hf_logging, "is_progress_bar_enabled", lambda: True)()
    hf_logging.set_verbosity_error()
    if hasattr(hf_logging, "disable_progress_bar"):
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars and hasattr(hf_logging, "enable_progress_bar"):
            hf_logging.enable_progress_bar()


def expected_shapes(arch: Architecture) -> dict[str, tuple[int, ...]]:
    """Every Hugging Face key of a ``ViTMSNModel`` with ``arch`` and its shape (from the rules)."""
    out: dict[str, tuple[int, ...]] = {}
    for target, _src, rule, part in mapping.expected_targets(arch):
        assert rule.shape is not None
        shape = rule.shape(arch)
        if part is not None:
            shape = (shape[0] // 3, *shape[1:])
        out[target] = shape
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return json.dumps(v) if isinstance(v, str) else str(v)


# --------------------------------------------------------------------------------------------
# Deterministic inputs
# --------------------------------------------------------------------------------------------

def noise_image(size: int, seed: int, channels: int = 3) -> torch.Tensor:
    """Standard normal pixels: roughly the range of an ImageNet-normalised image."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, channels, size, size, generator=g)


def natural_image(size: int, seed: int, channels: int = 3) -> torch.Tensor:
    """A smooth image with natural-image statistics, normalised with ImageNet mean/std.

    Sum of bicubically upsampled noise octaves with 1/f-like weights (most energy at low
    frequencies), channels correlated through a shared luminance, squashed into [0, 1],
    quantised to 8 bits like a decoded JPEG, then ``(x - mean) / std``.
    """
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    img = torch.zeros(1, channels, size, size)
    for cells, weight in ((2, 1.0), (4, 0.6), (8, 0.35), (16, 0.2), (32, 0.1)):
        n = torch.randn(1, channels, cells, cells, generator=g)
        img += weight * F.interpolate(n, size=(size, size), mode="bicubic", align_corners=False)
    img = 0.75 * img.mean(dim=1, keepdim=True) + 0.25 * img
    img = torch.sigmoid(1.8 * img)
    img = torch.round(img * 255) / 255
    mean = torch.tensor((IMAGENET_MEAN * channels)[:channels]).view(1, channels, 1, 1)
    std = torch.tensor((IMAGENET_STD * channels)[:channels]).view(1, channels, 1, 1)
    return (img - mean) / std


@dataclass(frozen=True)
class ParityInput:
    """One deterministic image of the parity check and how far it runs."""

    description: str
    size: int
    pixels: torch.Tensor
    """1 x C x size x size, float32."""
    every_layer: bool
    """True: every layer is compared; False: the embeddings alone (the native-size inputs)."""


DEPTH_GRID_AT_MOST = 8
"""Patches a side, at most, of the input every layer is compared on (where the grid allows)."""


def depth_size(arch: Architecture) -> int:
    """The image size at which every layer is compared: the native grid halved until it has
    at most :data:`DEPTH_GRID_AT_MOST` patches a side, at a size where both implementations
    resize the position grid alike (:func:`msn_cli.original.reference.other_grid`): 7 x 7 patches for
    the /16 models at 224 px, 8 x 8 for ViT-L/7, 7 x 7 for ViT-B/4. The deep comparison
    then costs a small fraction of a native-size pass, for every layer and every weight."""
    from msn_cli.original.reference import other_grid

    return other_grid(arch.grid, DEPTH_GRID_AT_MOST) * arch.patch_size


def parity_inputs(arch: Architecture) -> list[ParityInput]:
    """Every parity input, native size first.

    What depends on the image size is the embeddings: the position embeddings are used as
    stored only at the native size, and interpolated at any other. The blocks and the final
    norm act on each token the same way at any size (attention mixes however many tokens
    there are). So the native-size inputs are compared at the embeddings, where the position
    embeddings are used exactly as at native size; every layer -- the embeddings with
    interpolated positions, each block, the final norm, on all tokens -- is compared on
    inputs at :func:`depth_size`. Noise exercises every weight with unit-scale activations;
    the natural-image-like picture gives the token statistics real use sees; both at both
    sizes.
    """
    native, small, c = arch.image_size, depth_size(arch), arch.num_channels
    return [
        ParityInput(f"normal noise, seed 0, {native} px (embeddings)", native,
                    noise_image(native, 0, c), False),
        ParityInput(f"natural-image-like, seed 2, {native} px (embeddings)", native,
                    natural_image(native, 2, c), False),
        ParityInput(f"normal noise, seed 1, {small} px (interpolated positions, every layer)",
                    small, noise_image(small, 1, c), True),
        ParityInput(f"natural-image-like, seed 4, {small} px (interpolated positions, every "
                    "layer)", small, natural_image(small, 4, c), True),
    ]


# --------------------------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------------------------

def _read_config(folder: Path) -> tuple[dict[str, Any] | None, str | None]:
    return read_json_object(folder / CONFIG)


def _weights_header(folder: Path) -> tuple[dict[str, Any] | None, str | None]:
    path = folder / WEIGHTS
    try:
        return read_header(path), None
    except FileNotFoundError:
        return None, f"{WEIGHTS} is missing"
    except (HeaderError, OSError) as e:
        return None, f"{WEIGHTS} is not a readable safetensors file ({e})"


def check_files(folder: Path, manifest: dict[str, Any] | None,
                progress: ProgressFn = no_progress,
                known_hashes: dict[str, str] | None = None) -> tuple[CheckResult, str | None, str | None]:
    """Hashes against the manifest, required files, config <-> weights header; and the dtype.

    ``known_hashes``: sha256 values the caller computed from the files' bytes as read back
    from disk a moment ago (``convert`` does, after writing); those files are not read again.
    The third value, when not None, says why the folder must not be given to
    ``from_pretrained``: a required file is not there (or not a regular file), or
    ``config.json`` is malformed or implies tensors the weights do not hold (a config claiming
    a million layers would otherwise be built, at minutes and gigabytes).
    """
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    unloadable: list[str] = []
    for name in (WEIGHTS, CONFIG, PREPROCESSOR):
        problem = regular_file_problem(folder / name)
        if problem is not None:
            problems.append(f"{name} is {problem}")
            rows.append({"file": name, "ok": False, "problem": problem})
    absent = {r["file"] for r in rows}
    for row in check_listed_files(folder, manifest, progress, known_hashes):
        if row["file"] in absent:
            continue
        rows.append(row)
        if not row["ok"]:
            problems.append(f"{row['file']} is missing" if row["problem"] == "missing" else
                            f"{row['file']}: {row['problem']}")
    listed = (manifest or {}).get("files") or {}
    config, cerr = _read_config(folder)
    header, herr = _weights_header(folder)
    for name, err in ((CONFIG, cerr), (WEIGHTS, herr)):
        if err is not None:
            unloadable.append(err)
            if name not in absent:
                problems.append(err)
    dtype: str | None = None
    if header is not None:
        tensors = {k: v for k, v in header.items() if k != "__metadata__"}
        dtypes = sorted({_ST_TO_TORCH.get(v["dtype"], v["dtype"]) for v in tensors.values()})
        dtype = dtypes[0] if len(dtypes) == 1 else None
        if len(dtypes) > 1:
            problems.append(f"{WEIGHTS} mixes dtypes: {', '.join(dtypes)}")
        if config is not None:
            try:
                want = expected_shapes(config_architecture(config, tensors))
            except ConfigError as e:
                problems.append(str(e))
                unloadable.append(str(e))
                want = None
            if want is not None:
                missing = sorted(set(want) - set(tensors))
                extra = sorted(set(tensors) - set(want))
                shapes = sorted(k for k in set(want) & set(tensors)
                                if tuple(tensors[k]["shape"]) != want[k])
                for label, keys in (("missing from the weights", missing),
                                    ("not expected by the config", extra),
                                    ("with a shape the config does not imply", shapes)):
                    if keys:
                        problems.append(f"{len(keys)} tensor(s) {label}: {', '.join(keys[:3])}"
                                        + (" ..." if len(keys) > 3 else ""))
                if missing or shapes:
                    unloadable.append(f"{CONFIG} implies tensors the weights do not hold")
            cdtype = config.get("torch_dtype") or config.get("dtype")
            if dtype and cdtype and cdtype != dtype:
                problems.append(f"{CONFIG} says dtype {cdtype}, the weights are {dtype}")
        mdtype = (manifest or {}).get("dtype")
        if dtype and mdtype and mdtype != dtype:
            problems.append(f"the manifest says dtype {mdtype}, the weights are {dtype}")
    why = "; ".join(unloadable) or None
    if problems:
        return (CheckResult("files", False, "; ".join(problems), {"files": len(rows)}, rows), dtype,
                why)
    what = (f"{len(listed)} files match the manifest's sha256" if listed else
            "the manifest lists no files: hashes not checked" if manifest else
            "no manifest: hashes not checked")
    return CheckResult("files", True, f"{what}; config and weights header agree ({dtype})",
                       {"files": len(rows)}, rows), dtype, why


def check_config(folder: Path, arch: Architecture, dtype: str,
                 provenance: tuple[Provenance, ...] | list[Provenance] = ()) -> CheckResult:
    """Effective (as transformers reads them) computation-relevant values vs the source's.

    ``provenance``: where the expected values that the weights do not hold come from; each
    row and the detail say so (a value that is assumed was checked against an assumption).
    """
    expected = arch.hf_config(dtype)
    origin = {p.key: p for p in provenance}
    raw, err = _read_config(folder)
    if raw is None:
        return CheckResult("config", False, err or f"{CONFIG} unreadable")
    try:
        from transformers import ViTMSNConfig

        with _quiet_transformers():
            effective = ViTMSNConfig.from_pretrained(str(folder)).to_dict()
    except Exception as e:
        return CheckResult("config", False, f"transformers cannot read {CONFIG}: {e}")
    rows: list[dict[str, Any]] = []
    bad: list[str] = []
    for key in RELEVANT_CONFIG:
        want = expected[key]
        # model_type: what AutoModel dispatches on is the file's value (ViTMSNConfig reports
        # its own class attribute whatever the file says); the rest: what transformers uses
        got = raw.get(key) if key == "model_type" else effective.get(key, raw.get(key))
        if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
            ok = math.isclose(float(got), want, rel_tol=1e-9, abs_tol=0.0)
        else:
            ok = type(got) is type(want) and got == want
        row = {"key": key, "expected": want, "found": got, "in_file": key in raw, "ok": ok}
        p = origin.get(key)
        if p is not None:
            row.update(origin=p.origin, assumed=p.assumed, source=p.source)
        rows.append(row)
        if not ok:
            why = f" ({p.label}: {p.source})" if p is not None and p.origin != "weights" else ""
            bad.append(f"{key} = {_fmt(got)}, expected {_fmt(want)}{why}")
    choice = _check_preprocessor(folder, arch, rows, bad)
    outside = [p for p in provenance if p.origin != "weights"]
    known = ("; not in the weights, so checked against: " + ", ".join(
        f"{p.key} {_fmt(p.value)} ({'ASSUMED' if p.assumed else p.origin})" for p in outside)
        if outside else "")
    numbers = {"mismatched": len(bad), "assumed": sum(p.assumed for p in provenance)}
    if bad:
        assumed_note = "; ASSUMED: " + ", ".join(p.key for p in outside if p.assumed) \
            if any(p.assumed for p in outside) else ""
        return CheckResult("config", False, "; ".join(bad) + assumed_note, numbers, rows)
    return CheckResult("config", True, f"{len(rows)} computation-relevant values match the source "
                       f"(layer_norm_eps {LAYER_NORM_EPS:g}, exact gelu; preprocessing {choice}: "
                       f"{arch.image_size} px, ImageNet mean/std){known}", numbers, rows)


def _check_preprocessor(folder: Path, arch: Architecture, rows: list[dict[str, Any]],
                        bad: list[str]) -> str:
    """``preprocessor_config.json`` against the preprocessing the folder declares (the
    manifest's choice, else the one the file matches, else msn) at the model's size."""
    from msn_cli.original.preprocess import get, same_value
    from msn_cli.verify.preprocessing import declared_choice

    choice = get(declared_choice(folder, arch.image_size))
    raw, err = read_json_object(folder / PREPROCESSOR)  # regular files only: a FIFO would hang
    if raw is None:
        bad.append(err or f"{PREPROCESSOR} unreadable")
        return choice.name
    expected = choice.config(arch.image_size)
    for key in ("image_processor_type", *choice.relevant):
        want, got = expected[key], raw.get(key)
        ok = same_value(got, want)
        rows.append({"key": f"{PREPROCESSOR}:{key}", "expected": want, "found": got,
                     "in_file": key in raw, "ok": ok})
        if not ok:
            bad.append(f"{PREPROCESSOR} {key} = {_fmt(got)}, expected {_fmt(want)}")
    return choice.name


def _info_get(info: Any, key: str) -> list[Any]:
    v = info.get(key) if isinstance(info, dict) else getattr(info, key, None)
    return sorted(map(str, v)) if v else []


def load_hf_model(folder: Path, dtype: str) -> tuple[Any, CheckResult]:
    """``ViTMSNModel.from_pretrained`` with loading info; (model or None, the loading check)."""
    import torch
    from transformers import ViTMSNModel

    try:
        with _quiet_transformers():
            loaded: Any = ViTMSNModel.from_pretrained(
                str(folder), output_loading_info=True, dtype=getattr(torch, dtype))
            model, info = loaded
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return None, CheckResult("loading", False, f"from_pretrained failed: {first[:300]}")
    model.eval()
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        items = _info_get(info, key)
        rows.append({"kind": key, "count": len(items), "items": items[:20]})
        if items:
            problems.append(f"{len(items)} {key.replace('_', ' ')}: {', '.join(items[:3])}"
                            + (" ..." if len(items) > 3 else ""))
    numbers: dict[str, Any] = {str(r["kind"]): r["count"] for r in rows}
    if problems:
        return model, CheckResult("loading", False, "; ".join(problems), numbers, rows)
    return model, CheckResult("loading", True, "from_pretrained: no missing, unexpected or "
                              "mismatched keys", numbers, rows)


def _layer_names(num_layers: int) -> list[tuple[str, str, str]]:
    names = [("embeddings", "hidden_states[0]", "patch_embed + cls_token + pos_embed")]
    names += [(f"block {i}", f"hidden_states[{i + 1}]", f"blocks.{i}") for i in range(num_layers)]
    names.append(("final norm", "last_hidden_state", "norm"))
    return names


def _coverage(groups: dict[tuple[int, bool], list[ParityInput]], n_layers: int) -> str:
    """What parity compared: ``embeddings at 224 px, all 14 layers at 112 px, 2 inputs each``."""
    parts = [f"all {n_layers} layers at {size} px" if every else f"embeddings at {size} px"
             for size, every in groups]
    counts = {len(g) for g in groups.values()}
    each = f"{counts.pop()} inputs each" if len(counts) == 1 else \
        f"{sum(len(g) for g in groups.values())} inputs"
    return f"{', '.join(parts)}, {each}"


@dataclass
class ReferencePass:
    """The reference's outputs on every parity input, grouped as :func:`check_parity` runs
    them: ``(size, every_layer) -> (inputs, outputs)``."""

    groups: dict[tuple[int, bool], tuple[list[ParityInput], list[Any]]]


def _released(releaser: PageReleaser | None) -> Any:
    return releaser.after_each_module if releaser is not None else \
        (lambda _m: contextlib.nullcontext())


def reference_pass(reference: Any, arch: Architecture,
                   releaser: PageReleaser | None = None) -> ReferencePass:
    """Run the reference on every parity input (one batch per size); needs no transformers,
    so verify runs it while transformers is still being imported."""
    import torch

    from msn_cli.original.reference import run_embeddings, run_reference

    groups: dict[tuple[int, bool], list[ParityInput]] = {}
    for i in parity_inputs(arch):
        groups.setdefault((i.size, i.every_layer), []).append(i)
    released = _released(releaser)
    out: dict[tuple[int, bool], tuple[list[ParityInput], list[Any]]] = {}
    for (size, every_layer), group in groups.items():
        pixels = torch.cat([i.pixels for i in group])
        with released(reference):
            ref = run_reference(reference, pixels).all if every_layer else \
                [run_embeddings(reference, pixels)]
        out[(size, every_layer)] = (group, ref)
    return ReferencePass(out)


def check_parity(model: Any, reference: Any, arch: Architecture, dtype: str,
                 progress: ProgressFn = no_progress,
                 releaser: PageReleaser | None = None,
                 ref_pass: ReferencePass | None = None) -> tuple[CheckResult, list[LayerStat], list[dict]]:
    """Compare the layers :func:`parity_inputs` names on every input; the per-layer table; the
    input descriptions.

    The inputs of one size run as one batch, through the reference (``ref_pass``, when the
    caller ran it already), then the converted model. ``releaser``: gives back each module's
    memory-mapped weight pages once it has run (:mod:`msn_cli.util.residency`), so that the two
    models' weights are not resident at once.
    """
    import torch

    tol = TOLERANCES.get(dtype, TOLERANCES["float32"])
    if ref_pass is None:
        ref_pass = reference_pass(reference, arch, releaser)
    inputs = [i for group, _ in ref_pass.groups.values() for i in group]
    names = _layer_names(arch.num_layers)
    acc: dict[tuple[int, int], dict[str, float]] = {}
    sizes: list[int] = []
    descriptions = [{"input": i.description, "size": i.size,
                     "layers": "all" if i.every_layer else "embeddings"} for i in inputs]
    groups = {key: group for key, (group, _) in ref_pass.groups.items()}
    tdtype = getattr(torch, dtype)
    released = _released(releaser)
    n_done = 0
    for (size, every_layer), (group, ref) in list(ref_pass.groups.items()):
        if size not in sizes:
            sizes.append(size)
        pixels = torch.cat([i.pixels for i in group])
        desc = " and ".join(i.description for i in group)
        try:
            with torch.inference_mode(), released(model):
                if every_layer:
                    out = model(pixel_values=pixels.to(tdtype), output_hidden_states=True,
                                interpolate_pos_encoding=size != arch.image_size)
                    hf = [*out.hidden_states, out.last_hidden_state]
                else:  # the converted model's own embeddings module, as its forward calls it
                    hf = [model.embeddings(pixels.to(tdtype), interpolate_pos_encoding=False)]
        except Exception as e:
            msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
            return CheckResult("parity", False, f"the converted model failed on {desc}: "
                               f"{msg[:300]}"), [], descriptions
        if len(hf) != len(ref) or any(h.shape != r.shape for h, r in zip(hf, ref, strict=False)):
            return CheckResult("parity", False, (
                f"the converted model returns {len(hf)} outputs of shape "
                f"{list(hf[-1].shape)}, the original {len(ref)} of {list(ref[-1].shape)} "
                f"on {desc}")), [], descriptions
        for li, (h, r) in enumerate(zip(hf, ref, strict=False)):
            h32 = h.float()
            diff = (h32 - r).abs()
            cos = torch.nn.functional.cosine_similarity(h32, r, dim=-1, eps=1e-12)
            a = acc.setdefault((size, li), {"max": 0.0, "sum": 0.0, "n": 0, "cos": 1.0, "scale": 0.0})
            a["max"] = max(a["max"], float(diff.max()))
            a["sum"] += float(diff.sum(dtype=torch.float64))
            a["n"] += diff.numel()
            a["cos"] = min(a["cos"], float(cos.min()))
            a["scale"] = max(a["scale"], float(r.abs().max()))
            if not math.isfinite(float(diff.max())):
                a["max"] = math.inf
        del ref, hf
        ref_pass.groups[(size, every_layer)] = (group, [])  # freed as soon as compared
        n_done += len(group)
        progress("parity", n_done, len(inputs))
    stats = []
    for (size, li), a in acc.items():
        name, hfname, orig = names[li]
        scale = max(1.0, a["scale"])
        allowed = tol.atol * scale
        ok = a["max"] <= allowed and a["cos"] >= tol.cosine_min
        stats.append(LayerStat(li, name, hfname, orig, size, a["max"], a["sum"] / max(1, a["n"]),
                               a["cos"], scale, allowed, ok))
    worst = max(stats, key=lambda s: s.max_abs_err / s.allowed)
    bad = [s for s in stats if not s.passed]
    numbers: dict[str, Any] = {
        "layers": len(names), "inputs": len(inputs), "sizes": sizes,
        "max_abs_err": max(s.max_abs_err for s in stats),
        "mean_abs_err": sum(s.mean_abs_err for s in stats) / len(stats),
        "min_cosine": min(s.min_cosine for s in stats),
        "worst_ratio": worst.max_abs_err / worst.allowed,
        "tolerance": tol.atol,
        "first_bad_layer": None,
        "coverage": _coverage(groups, len(names)),
    }
    if bad:
        first = min(bad, key=lambda s: (s.index, sizes.index(s.size)))
        numbers["first_bad_layer"] = first.name
        why = (f"max abs err {first.max_abs_err:.2e} > {first.allowed:.2e}"
               if first.max_abs_err > first.allowed else
               f"min cosine {first.min_cosine:.6f} < {tol.cosine_min}")
        return CheckResult("parity", False, (
            f"first bad layer: {first.name} ({first.hf} vs original {first.original}) at "
            f"{first.size} px: {why}; {len(bad)} of {len(stats)} layer comparisons over "
            "tolerance"), numbers), stats, descriptions
    return CheckResult("parity", True, (
        f"{numbers['coverage']}: "
        f"max abs err {numbers['max_abs_err']:.1e}, min cosine {numbers['min_cosine']:.7f}, "
        f"worst layer at {numbers['worst_ratio']:.0%} of its tolerance"), numbers), stats, descriptions


def golden_pixels(image: Path, size: int = GOLDEN_IMAGE_SIZE) -> torch.Tensor:
    """The seed's preprocessing, done here with PIL and numpy: RGB, a plain bilinear resize to
    ``size`` x ``size`` (no crop), x / 255, ImageNet mean/std; 1 x 3 x size x size float32.

    This is what the seed's ``ViTImageProcessor`` did in transformers 4.x (PIL backend);
    transformers 5.x picks a torchvision backend when one is installed, whose resize differs,
    so verify does not delegate it.
    """
    import torch

    from msn_cli.original.preprocess import seed_transform
    from msn_cli.verify.preprocessing import load_photo

    # read as --image is everywhere: a regular file only, within PIL's pixel limit
    return torch.from_numpy(seed_transform(load_photo(image).image, size))[None]


def check_golden(model: Any, variant: Variant | None, image: Path | None, dtype: str) -> CheckResult:
    if variant is None:
        return CheckResult("golden", None, "skipped: not one of the released variants")
    if image is None:
        return CheckResult("golden", None, f"skipped: {variant.name} has published values; give "
                           "--image with COCO val2017 000000039769.jpg to check them")
    if model is None:
        return CheckResult("golden", False, "the model did not load")
    import torch

    pixels = golden_pixels(image, variant.image_size)
    with torch.inference_mode():
        out = model(pixel_values=pixels.to(getattr(torch, dtype))).last_hidden_state
    got = [float(x) for x in out[0, 0, :3].float()]
    want = list(variant.expected_slice)
    atol = GOLDEN_ATOL_FLOAT32 if dtype == "float32" else \
        TOLERANCES.get(dtype, TOLERANCES["float32"]).atol * max(1.0, *(abs(w) for w in want))
    err = max(abs(g - w) for g, w in zip(got, want, strict=True))
    numbers = {"got": got, "expected": want, "max_abs_err": err, "atol": atol}
    text = (f"last_hidden_state[0, 0, :3] = {', '.join(f'{g:.4f}' for g in got)}; published "
            f"{', '.join(f'{w:.4f}' for w in want)}; max abs err {err:.1e} (tol {atol:.0e})")
    return CheckResult("golden", err <= atol, text, numbers)


# --------------------------------------------------------------------------------------------
# --against
# --------------------------------------------------------------------------------------------

def _resolve_against(spec: str, progress: ProgressFn) -> Path:
    p = Path(spec).expanduser()
    if p.exists():
        if not p.is_dir():
            raise _could_not_run(f"--against {spec}: not a folder",
                                 hint="give a Hugging Face model folder or a Hub repo id")
        return p
    if spec.count("/") != 1 or spec.startswith((".", "/", "~")):
        raise _could_not_run(f"--against {spec}: no such folder, and not a Hub repo id (owner/name)")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover
        raise NetworkError("huggingface_hub is not installed") from e
    progress("downloading " + spec, 0, None)
    try:
        path = snapshot_download(spec, allow_patterns=["*.json", "*.safetensors", "pytorch_model.bin"])
    except Exception as e:
        raise NetworkError(f"cannot fetch {spec} from the Hub: {type(e).__name__}: "
                           f"{(str(e).splitlines() or [''])[0][:200]}",
                           hint="check the repo id and your connection (HF_HUB_OFFLINE=1 "
                                "uses only what is cached)") from e
    return Path(path)


class _Tensors:
    """The tensors ``from_pretrained`` would load from a Hugging Face model folder, read one at
    a time: ``model.safetensors``, else the shards of ``model.safetensors.index.json``, else
    ``pytorch_model.bin`` memory-mapped with ``weights_only=True`` (:func:`weights_files`;
    never a glob, so a decoy file beside them is not read). Every file is a regular file with
    a valid header; a tensor stored twice, or where the index does not put it, is refused."""

    def __init__(self, folder: Path):
        import torch
        from safetensors import safe_open

        self._where: dict[str, Any] = {}
        self._handles: list[Any] = []
        files, weight_map = weights_files(folder)
        if files[0].name.endswith(".bin"):
            binf = files[0]
            try:
                with safeio.open_regular(binf):  # a FIFO would block torch.load
                    pass
                obj = torch.load(binf, map_location="cpu", weights_only=True, mmap=True)
            except safeio.UnsafeInput as e:
                raise _could_not_run(f"cannot read {binf}: {e}") from e
            except Exception as e:
                raise _could_not_run(f"cannot read {binf} safely: {e}") from e
            if not isinstance(obj, dict):
                raise _could_not_run(f"{binf} holds {type(obj).__name__}, not a state dict "
                                     "(tensor names -> tensors)")
            self._where = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            return
        where_from: dict[str, str] = {}
        for f in files:
            try:
                read_header(f)  # the typed reader first: a regular file, a valid header
                h = safe_open(str(f), framework="pt")
            except FileNotFoundError as e:
                raise _could_not_run(f"{folder} lacks {f.name}" + (
                    f", a shard {SAFE_INDEX} lists" if weight_map else "")) from e
            except Exception as e:
                raise _could_not_run(f"cannot read {f}: {e}") from e
            self._handles.append(h)
            for k in h.keys():
                if k in self._where:
                    raise _could_not_run(f"{folder}: tensor {k} is stored more than once "
                                         f"({where_from[k]} and {f.name})")
                if weight_map is not None and weight_map.get(k) != f.name:
                    raise _could_not_run(f"{folder}: {f.name} holds {k}, which {SAFE_INDEX} puts "
                                         f"{'in ' + str(weight_map[k]) if k in weight_map else 'nowhere'}")
                self._where[k] = h
                where_from[k] = f.name
        if weight_map is not None and (lost := sorted(set(weight_map) - set(self._where))):
            raise _could_not_run(f"{folder}: {SAFE_INDEX} lists {len(lost)} tensor(s) no shard "
                                 f"holds: {', '.join(lost[:3])}")

    def keys(self) -> list[str]:
        return list(self._where)

    def get(self, key: str) -> torch.Tensor:
        v = self._where[key]
        return v.get_tensor(key) if hasattr(v, "get_tensor") else v


_IGNORED_PREFIXES = ("classifier.",)


def _key_map(keys: list[str]) -> dict[str, str]:
    """Normalised key -> stored key: the ``vit.`` prefix of classification-model saves stripped."""
    if keys and all(k.startswith("vit.") or k.startswith(_IGNORED_PREFIXES) for k in keys):
        return {k.removeprefix("vit."): k for k in keys}
    return {k: k for k in keys}


_EPS = {"float32": 2.0 ** -23, "float16": 2.0 ** -10, "bfloat16": 2.0 ** -7, "float64": 2.0 ** -52}


def check_against(folder: Path, spec: str, progress: ProgressFn = no_progress,
                  other: Path | None = None) -> CheckResult:
    """Compare ``folder`` with ``spec`` (a folder or Hub repo id; ``other`` if already fetched)."""
    import torch

    if other is None:
        other = _resolve_against(spec, progress)
    here, there = _Tensors(folder), _Tensors(other)
    ours, theirs = _key_map(here.keys()), _key_map(there.keys())
    rows: list[dict[str, Any]] = []
    n_bad = 0
    worst = 0.0
    for key in sorted(set(ours) | set(theirs)):
        a = here.get(ours[key]) if key in ours else None
        b = there.get(theirs[key]) if key in theirs else None
        row: dict[str, Any] = {"key": key}
        if a is None or b is None:
            ignored = key.startswith(_IGNORED_PREFIXES)
            row["status"] = ("ignored (classification head)" if ignored else
                             "only here" if b is None else "only there")
            row["ok"] = ignored
        elif a.shape != b.shape:
            row.update(status="shape", ok=False, shape=list(a.shape), other_shape=list(b.shape))
        else:
            da, db = str(a.dtype).removeprefix("torch."), str(b.dtype).removeprefix("torch.")
            d = float((a.float() - b.float()).abs().max()) if a.numel() else 0.0
            worst = max(worst, d)
            row.update(shape=list(a.shape), dtype=da, other_dtype=db, max_abs_diff=d)
            if da == db:
                row["ok"] = bool(torch.equal(a, b))
                row["status"] = "identical" if row["ok"] else "differs"
            else:  # different precisions: equal up to rounding to the coarser one
                eps = max(_EPS.get(da, 2.0 ** -23), _EPS.get(db, 2.0 ** -23))
                lim = eps * float(torch.maximum(a.float().abs(), b.float().abs()).max()) + 1e-12
                row["ok"] = d <= lim
                row["status"] = "equal to rounding" if row["ok"] else "differs"
        n_bad += not row["ok"]
        rows.append(row)
    cfg_bad = []
    mine, _ = _read_config(folder)
    their_cfg, _ = _read_config(other)
    if mine is not None and their_cfg is not None:
        for key in RELEVANT_CONFIG:
            if key in mine and key in their_cfg and mine[key] != their_cfg[key]:
                cfg_bad.append(f"{key} {_fmt(mine[key])} here, {_fmt(their_cfg[key])} there")
                rows.append({"key": f"config.json:{key}", "status": "differs", "ok": False,
                             "here": mine[key], "there": their_cfg[key]})
    compared = sum(1 for r in rows if "max_abs_diff" in r)
    numbers = {"tensors_here": len(ours), "tensors_there": len(theirs), "compared": compared,
               "differing": n_bad, "max_abs_diff": worst}
    if n_bad or cfg_bad:
        kinds: dict[str, int] = {}
        for r in rows:
            if not r["ok"]:
                kinds[r["status"]] = kinds.get(r["status"], 0) + 1
        text = f"{spec}: " + ", ".join(f"{n} {k}" for k, n in kinds.items())
        if cfg_bad:
            text += "; config: " + "; ".join(cfg_bad)
        return CheckResult("against", False, text, numbers, rows)
    return CheckResult("against", True, f"{spec}: all {compared} tensors match "
                       f"(max abs diff {worst:.1e})", numbers, rows)


# --------------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------------

def _recorded_path(path: Any, folder: Path) -> Path | None:
    """The manifest's source file, when it is still there.

    msn records an absolute path. Manifests written before it did hold the path as typed,
    relative to the folder convert ran in; that is tried first (as before), then the same file
    name beside the converted folder (where the demo and most users keep it). The source's
    sha256, checked next, catches a different file of the same name.
    """
    if not isinstance(path, str) or not path:
        return None
    recorded = Path(path).expanduser()
    candidates = [recorded]
    if not recorded.is_absolute():
        candidates.append(folder.absolute().parent / recorded.name)
    return next((c for c in candidates if c.is_file()), None)


def _manifest_download(src: dict[str, Any], cache_dir: Any, base_url: str | None,
                       progress: ProgressFn) -> ResolvedSource:
    """The source a manifest names by name or URL, fetched only when that is safe.

    A folder may come from anyone, so its word alone never makes msn download an arbitrary
    URL (an internal host, a huge file to fill the cache). The rule: a released checkpoint
    (its name, or its canonical URL) is fetched as the released name, from the user's own
    ``--base-url`` / ``MSN_BASE_URL`` or Meta's server; any other URL is used only when the
    cache already holds it (no network); else verify asks for ``--source URL``.
    """
    from msn_cli.transfer.cache import Cache
    from msn_cli.transfer.sources import ResolvedSource, public_url, resolve_source
    from msn_cli.util.safeio import strip_credentials

    canonical = public_url(src)  # a released name, or a released file's own URL
    if canonical:
        released = next(v.name for v in VARIANTS.values() if v.url() == canonical)
        return resolve_source(released, cache_dir=cache_dir, base_url=base_url, progress=progress)
    url = src.get("url")
    if not isinstance(url, str) or "://" not in url:
        raise CheckpointError("the source checkpoint is gone, and the manifest names no released "
                              "variant or URL to fetch it again", hint="pass it with --source PATH|NAME|URL")
    shown = strip_credentials(url)
    cache = Cache(cache_dir)
    entry = cache.find_by_url(shown)
    if entry is not None and cache.intact(entry):
        return ResolvedSource(shown, "url", cache.file_path(entry.name), url=shown, sha256=entry.sha256)
    raise CheckpointError(
        f"the source checkpoint is gone and the manifest names {shown}, which is not a released "
        "checkpoint: msn does not download a URL on a folder's word",
        hint=f"if you trust that URL, pass it with --source {shown} (or a local copy with --source PATH)")


def _source_checkpoint(manifest: dict[str, Any] | None, folder: Path, source: str | None,
                       cache_dir: Any, base_url: str | None, progress: ProgressFn,
                       encoder: str | None) -> tuple[Checkpoint, dict[str, Any]]:
    """The source checkpoint, and what verify reports of it; ``mismatch`` says when it is not
    the file the manifest records (the files check then fails: never a recorded pass)."""
    from msn_cli.transfer.sources import resolve_source

    src = (manifest or {}).get("source") or {}
    enc = encoder or src.get("encoder") or "target"
    if enc not in ("target", "online"):
        raise _could_not_run(f"unknown encoder '{enc}' in the manifest")
    recorded = _recorded_path(src.get("path"), folder)
    if source is not None:
        resolved = resolve_source(source, cache_dir=cache_dir, base_url=base_url, progress=progress)
    elif recorded is not None:
        resolved = resolve_source(str(recorded), cache_dir=cache_dir, base_url=base_url,
                                  progress=progress)
    elif src.get("kind") in ("variant", "url") and (src.get("name") or src.get("url")):
        resolved = _manifest_download(src, cache_dir, base_url, progress)
    else:
        where = src.get("path") or "(not recorded)"
        raise CheckpointError(f"the source checkpoint {where} is gone, and the manifest names no "
                              "released variant or URL to fetch it again",
                              hint="pass it with --source PATH|NAME|URL")
    ckpt = load_checkpoint(resolved.path, enc)  # type: ignore[arg-type]
    preload_transformers()  # torch is in: the import runs while the source is hashed
    want_sha = src.get("sha256")
    have = None
    if want_sha and not (src.get("size") and ckpt.file_size != src.get("size")):
        have = resolved.sha256 or sha256_file(resolved.path, progress, "hashing source")
    info: dict[str, Any] = {"path": str(resolved.path), "kind": resolved.kind, "encoder": enc,
                            "given": source is not None}
    if want_sha and have != want_sha:  # never a pass: the card would vouch for want_sha
        info["mismatch"] = (f"the source {resolved.path} is not the file this folder was converted "
                            f"from (the manifest records {src.get('size')} bytes, sha256 "
                            f"{want_sha[:12]}...)")
    return ckpt, info


def verify_folder(
    folder: str | os.PathLike[str],
    *,
    checkpoint: Checkpoint | None = None,
    source: str | None = None,
    image: str | os.PathLike[str] | None = None,
    against: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    base_url: str | None = None,
    encoder: str | None = None,
    num_heads: int | None = None,
    config: str | os.PathLike[str] | None = None,
    known: Known | None = None,
    known_hashes: dict[str, str] | None = None,
    progress: ProgressFn = no_progress,
    preprocessing_effect: bool = False,
) -> VerifyReport:
    """Run every check on ``folder``; see the module docstring.

    The values the weights do not hold (the heads above all) are resolved independently of
    the folder's own ``config.json``: ``num_heads`` (the user) > the run's config (``config``,
    or the ``params-msn-train.yaml`` beside the source checkpoint) > the original model family
    by width > what the manifest records as given by the user or a run config > hidden size /
    64, reported as assumed. ``known``: all of that already resolved (``convert`` passes its
    own).

    ``preprocessing_effect``: also run the converted model on the processor's and the
    transform's pixels of every photo whose pixels differ (the ``preprocessing`` check's output
    effect; two native-size forward passes per such photo, so off by default).

    A failed check is part of the returned report. Raises :class:`FolderError`,
    :class:`CheckpointError` (exit 3) or a network error (exit 4) when verify cannot run.
    """

    folder = Path(folder)
    if not folder.is_dir():
        raise FolderError(f"{folder} is not a folder" if folder.exists() else f"no such folder: {folder}",
                          hint="give the folder msn convert wrote")
    image = Path(image).expanduser() if image is not None else None
    if image is not None and not image.is_file():
        raise _could_not_run(f"the image {image} is not a regular file" if image.exists()
                             else f"no such image: {image}")
    manifest: dict[str, Any] | None = None
    if (folder / MANIFEST).exists() or (checkpoint is None and source is None):
        try:
            manifest = read_manifest(folder)
        except OSError as e:
            raise FolderError(f"cannot read {folder / MANIFEST}: {e.strerror or e}") from e
    notes: list[str] = []
    against_path = _resolve_against(against, progress) if against is not None else None
    if checkpoint is not None:
        ckpt = checkpoint
        src_info = {"path": str(ckpt.path), "kind": "given", "encoder": ckpt.encoder, "given": True}
    else:
        ckpt, src_info = _source_checkpoint(manifest, folder, source, cache_dir, base_url, progress,
                                            encoder)
    if known is None:
        known, _ = run_context(ckpt.path, config, num_heads, _recorded_heads(manifest))
    elif num_heads is not None:
        known = replace(known, num_heads=num_heads)
    preload_transformers()  # torch is in: transformers' import runs alongside what follows
    inferred = infer_architecture(ckpt.state, known=known)
    arch = inferred.arch
    summary = assumed_warning(inferred.provenance)
    notes += [*inferred.warnings, *([summary] if summary else [])]

    files, wdtype, unloadable = check_files(folder, manifest, progress, known_hashes)
    if src_info.get("mismatch"):
        mismatch = str(src_info["mismatch"])
        files = CheckResult("files", False, mismatch if files.passed else f"{files.detail}; {mismatch}",
                            files.numbers, files.rows)
    dtype = wdtype or (manifest or {}).get("dtype") or "float32"
    if dtype not in TOLERANCES:
        dtype = "float32"
    tol = TOLERANCES[dtype]
    checks = [files]
    layers: list[LayerStat] = []
    inputs: list[dict[str, Any]] = []
    model = reference = ref_pass = None
    if unloadable is None:
        from msn_cli.original.reference import build_reference

        # the reference first: it needs no transformers, whose import is still running
        reference = build_reference(ckpt.state, num_heads=arch.num_heads)
        ref_pass = reference_pass(reference, arch, PageReleaser([ckpt.path]))
        versions = _versions()
        model, loading = load_hf_model(folder, dtype)
    else:
        versions = _versions()
        loading = CheckResult("loading", False, f"not loaded: {unloadable}")
    checks.append(loading)
    checks.append(check_config(folder, arch, dtype, inferred.provenance))
    if model is not None:
        # the mappings from_pretrained made exist only now
        releaser = PageReleaser([ckpt.path, *_weights_paths(folder)])
        parity, layers, inputs = check_parity(model, reference, arch, dtype, progress, releaser,
                                              ref_pass)
        del ref_pass
    else:
        reference = None
        parity = CheckResult("parity", None, "skipped: the converted model did not load")
    checks.append(parity)
    from msn_cli.verify import preprocessing as vp

    checks.append(vp.check_preprocessing(folder, model, arch, dtype, [image] if image else [],
                                         effect=preprocessing_effect))
    variant = None
    if manifest and manifest.get("variant") in VARIANTS:
        variant = VARIANTS[manifest["variant"]]
    elif inferred.variant is not None:
        variant = inferred.variant
    why_not = vp.golden_skip_reason(manifest, variant) if variant is not None else None
    checks.append(check_golden(model, variant, image, dtype) if why_not is None else
                  CheckResult("golden", None, "skipped: " + why_not))
    checks.append(vp.check_image(folder, model, reference, arch, dtype, image, tol) if image else
                  CheckResult("image", None, "skipped: no --image given"))
    del reference
    if against is not None:
        checks.append(check_against(folder, against, progress, against_path))
        notes += vp.against_notes(folder, against, against_path)
    else:
        checks.append(CheckResult("against", None, "skipped: no --against given"))
    del model
    return VerifyReport(folder=folder, dtype=dtype, tolerance=tol, checks=checks, layers=layers,
                        inputs=inputs, source=src_info, variant=variant.name if variant else
                        match_variant_name(arch), notes=notes, date=_now(), versions=versions,
                        provenance=list(inferred.provenance))


def _weights_paths(folder: Path) -> list[Path]:
    """The weights files ``from_pretrained`` read (for :class:`PageReleaser`); none if unsure."""
    try:
        return list(weights_files(folder)[0])
    except (MsnError, OSError):
        return []


def _recorded_heads(manifest: dict[str, Any] | None) -> Provenance | None:
    """The heads a manifest records with their origin (None for manifests without one)."""
    for record in (manifest or {}).get("provenance") or []:
        p = Provenance.from_dict(record)
        if p is not None and p.key == HEADS:
            return p
    return None


def match_variant_name(arch: Architecture) -> str | None:
    v = match_variant(arch.hidden_size, arch.num_layers, arch.patch_size, arch.intermediate_size,
                      arch.image_size)
    return v.name if v else None
