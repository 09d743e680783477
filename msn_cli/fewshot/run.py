"""``msn fewshot``'s core: MSN's logistic-regression low-shot protocol on the user's folders.

Each image's feature is computed once (and cached), however many shots and splits use it; then,
per split, the training rows are normalised, the classifier fitted and both sets scored. Runs
are grouped by images per class (the paper's figure for a shot count is the mean and standard
deviation over its splits; the standard deviation is numpy's, over the splits, ddof 0).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msn_cli.errors import UsageError
from msn_cli.fewshot import classifier, data
from msn_cli.fewshot.data import DataError, ImageFolder, Split
from msn_cli.progress import ProgressFn, no_progress

if TYPE_CHECKING:
    import numpy as np

    from msn_cli.fewshot.features import FeaturePass


MAX_LAMBD = 1e6


@dataclass
class Options:
    shots: tuple[int, ...] = (1, 2, 5)
    splits: int = 3
    subsets: tuple[Path, ...] = ()
    lambd: float = 0.0025
    """The original script's default is 0.00025; its README's command uses 0.0025."""
    batch_size: int = 64
    device: str = "cpu"
    solver: str = "auto"
    save_features: Path | None = None
    force: bool = False
    cache_dir: str | None = None
    use_cache: bool = True
    base_url: str | None = None
    num_heads: int | None = None
    workers: int | None = None


@dataclass
class RunResult:
    subset: str | None
    shots: int | None
    seed: int | None
    top1: float
    train_top1: float
    n_train: int
    n_val: int
    train_files: list[str]


@dataclass
class Group:
    """The runs of one shot count (or one split file of unequal counts)."""

    label: str
    shots: int | None
    images_per_class: float
    runs: list[RunResult]

    def summary(self) -> dict[str, Any]:
        import numpy as np

        top1 = np.array([r.top1 for r in self.runs])
        return {"label": self.label, "shots": self.shots, "images_per_class": self.images_per_class,
                "splits": len(self.runs), "top1_mean": float(top1.mean()),
                "top1_std": float(top1.std()),
                "train_top1_mean": float(np.mean([r.train_top1 for r in self.runs]))}


@dataclass
class FewshotReport:
    model: dict[str, Any]
    solver: str
    lambd: float
    groups: list[Group]
    features: dict[str, Any]
    predictions: dict[str, list[int]] = field(default_factory=dict)
    """Each run's predicted label for every --val image (the library's, not in the JSON)."""
    notes: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)

    @property
    def runs(self) -> list[RunResult]:
        return [r for g in self.groups for r in g.runs]

    def to_dict(self) -> dict[str, Any]:
        """The JSON ``--json`` prints. ``top1_mean``/``top1_std``: over all runs when they are
        one group (one shot count), else null (each group's are in ``groups``)."""
        one = self.groups[0].summary() if len(self.groups) == 1 else None
        return {"runs": [asdict(r) for r in self.runs],
                "top1_mean": one["top1_mean"] if one else None,
                "top1_std": one["top1_std"] if one else None,
                "groups": [g.summary() for g in self.groups],
                "model": self.model, "solver": self.solver, "lambd": self.lambd,
                "classes": len(self.classes), "features": self.features, "notes": self.notes}


def _check_options(opts: Options) -> None:
    if opts.subsets:
        if len(opts.subsets) > data.MAX_SPLITS:
            raise UsageError(f"at most {data.MAX_SPLITS} --subset files")
    else:
        data.check_counts(list(opts.shots), opts.splits)
    if not 1 <= opts.batch_size <= 4096:
        raise UsageError("--batch-size must be from 1 to 4096")
    if not 0 < opts.lambd <= MAX_LAMBD:
        raise UsageError(f"--lambd must be above 0 and at most {MAX_LAMBD:g}, not {opts.lambd}")


def make_splits(train: ImageFolder, val: ImageFolder, opts: Options) -> list[Split]:
    """The training splits: the --subset files, else --shots x --splits sampled with seeds 0.."""
    if opts.subsets:
        splits = [data.read_subset(train, Path(p)) for p in opts.subsets]
        for s in splits:
            data.check_split_covers(s, train, val)
        return splits
    return [data.sample_split(train, k, seed) for k in opts.shots for seed in range(opts.splits)]


def _group(splits: list[Split], runs: list[RunResult]) -> list[Group]:
    groups: dict[str, Group] = {}
    for s, r in zip(splits, runs, strict=True):
        label = f"{s.shots}-shot" if s.shots is not None else Path(s.subset or "").name
        per_class = float(s.shots) if s.shots is not None else len(s.files) / max(1, len(s.per_class))
        groups.setdefault(label, Group(label, s.shots, per_class, [])).runs.append(r)
    return list(groups.values())


def fewshot(model_spec: str, train_dir: Path, val_dir: Path, opts: Options | None = None,
            progress: ProgressFn = no_progress) -> FewshotReport:
    """Run the low-shot evaluation of ``model_spec`` (see :mod:`msn_cli.fewshot.model`)."""
    import numpy as np

    from msn_cli.fewshot.model import load_model

    opts = opts or Options()
    _check_options(opts)
    solver = classifier.pick_solver(opts.solver)
    train = data.scan_folder(Path(train_dir), "--train")
    val = data.scan_folder(Path(val_dir), "--val")
    if len(train.classes) < 2:
        raise DataError(f"--train {train.root} has one class; a classifier needs two or more")
    data.check_val_classes(train, val)
    splits = make_splits(train, val, opts)
    if opts.save_features is not None:
        from msn_cli.util.outdir import check_file_target

        check_file_target(Path(opts.save_features).absolute(), opts.force)
    model = load_model(model_spec, device=opts.device, cache_dir=opts.cache_dir,
                       base_url=opts.base_url, num_heads=opts.num_heads, progress=progress)
    train_paths = list(dict.fromkeys(p for s in splits for p in s.files))
    label_of = {name: i for i, name in enumerate(train.classes)}
    val_paths = [p for c in val.classes for p in val.files[c]]
    val_labels = np.array([label_of[c] for c in val.classes for _ in val.files[c]], dtype=np.int64)
    passed, row_of, cache_notes = _features(model, train_paths + val_paths, opts, progress)
    val_x = classifier.normalise_rows(passed.features[[row_of[p] for p in val_paths]])
    runs: list[RunResult] = []
    predictions: dict[str, list[int]] = {}
    for s in splits:
        x = classifier.normalise_rows(passed.features[[row_of[p] for p in s.files]])
        y = data.labels_array(s.labels)
        fitted = classifier.fit(x, y, opts.lambd, solver)
        predicted = fitted.predict(val_x)
        runs.append(RunResult(s.subset, s.shots, s.seed, float((predicted == val_labels).mean() * 100),
                              fitted.top1(x, y), len(s.files), len(val_paths),
                              [p.relative_to(train.root).as_posix() for p in s.files]))
        predictions[f"{s.subset or s.shots}:{s.seed}"] = predicted.tolist()
    notes = [*model.notes, *cache_notes]
    if opts.save_features is not None:
        save_features(Path(opts.save_features), opts.force, model.to_dict(), train, val,
                      (passed.features[[row_of[p] for p in train_paths]],
                       [label_of[p.relative_to(train.root).parts[0]] for p in train_paths], train_paths),
                      (passed.features[[row_of[p] for p in val_paths]], val_labels.tolist(), val_paths))
    return FewshotReport(model.to_dict(), solver, opts.lambd, _group(splits, runs),
                         _pass_record(passed), predictions, notes, train.classes)


def _features(model: Any, paths: list[Path], opts: Options,
              progress: ProgressFn) -> tuple[FeaturePass, dict[Path, int], list[str]]:
    """One pass over every image the runs need (each once), through the feature cache."""
    from msn_cli.fewshot.features import compute_features
    from msn_cli.fewshot.store import FeatureStore, features_dir

    unique = list(dict.fromkeys(paths))
    folder = features_dir(opts.cache_dir, model.key) if opts.use_cache else None
    store = FeatureStore(folder, model.width)
    passed = compute_features(model, unique, store, batch_size=opts.batch_size,
                              workers=opts.workers, progress=progress)
    return passed, {p: i for i, p in enumerate(unique)}, store.notes


def _pass_record(passed: FeaturePass) -> dict[str, Any]:
    rate = passed.images_per_second
    return {"images": passed.computed + passed.cached, "computed": passed.computed,
            "cached": passed.cached, "seconds": round(passed.seconds, 3),
            "images_per_second": round(rate, 2) if rate is not None else None}


FeatureSet = tuple["np.ndarray", list[int], list[Path]]


def save_features(out: Path, force: bool, model: dict[str, Any], train: ImageFolder,
                  val: ImageFolder, train_set: FeatureSet, val_set: FeatureSet) -> None:
    """The raw features (pre-norm cls tokens, not normalised) and labels as safetensors, with
    the class names and file names (relative to their folder) in the metadata."""
    import numpy as np
    from safetensors.numpy import save_file

    from msn_cli.fewshot.store import FEATURE_DEFINITION
    from msn_cli.util.outdir import atomic_output_file

    tensors: dict[str, np.ndarray] = {"train.features": np.ascontiguousarray(train_set[0], dtype=np.float32),
               "train.labels": np.asarray(train_set[1], dtype=np.int64),
               "val.features": np.ascontiguousarray(val_set[0], dtype=np.float32),
               "val.labels": np.asarray(val_set[1], dtype=np.int64)}
    metadata = {"definition": FEATURE_DEFINITION,
                "normalisation": "none: centre and L2-normalise each row, as the protocol does",
                "classes": json.dumps(train.classes), "model": json.dumps(model),
                "train.files": json.dumps([p.relative_to(train.root).as_posix() for p in train_set[2]]),
                "val.files": json.dumps([p.relative_to(val.root).as_posix() for p in val_set[2]])}
    with atomic_output_file(out, force) as tmp:
        save_file(tensors, os.fspath(tmp), metadata=metadata)
