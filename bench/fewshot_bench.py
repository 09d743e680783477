"""Feature-pass benchmark: msn fewshot's feature pass against a plain transformers loop, same
folder, same batch size, same process, alternating.

Writes (once, under .bench/fewshot/) a folder of JPEG photographs of ImageNet-like sizes, made
from the bundled photos (crops, flips, scales), and a converted ViT-S/16-shaped folder with
random weights (msn_cli.dev.synth, msn convert --no-verify). Then, per round, in alternating
order:

- ``msn``: :func:`msn_cli.fewshot.features.compute_features` with the feature cache off (what
  ``msn fewshot --no-cache`` runs: images read, hashed and decoded in worker threads, streamed
  to ``ViTMSNModel`` in batches, the pre-norm cls token kept);
- ``transformers``: the loop people write: open each image with PIL, the folder's
  ``AutoImageProcessor`` on the batch, ``ViTMSNModel`` under ``torch.inference_mode``, the cls
  token of ``last_hidden_state``.

Both load the model once, before timing; each is warmed up with one batch. Images per second
is images / wall seconds of the whole pass (decoding included). Prints a markdown section on
stdout (for docs/benchmarks.md). Standalone:

    .venv/bin/python bench/fewshot_bench.py [--images 256] [--batch-size 32] [--runs 3]
        [--device cpu|cuda] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SCRATCH = REPO / ".bench" / "fewshot"


def make_images(root: Path, count: int) -> list[Path]:
    """``count`` JPEGs (about 500 x 375, as ImageNet's), in three class folders."""
    import random

    from PIL import Image

    import msn_cli

    photos = Path(msn_cli.__file__).parent / "photos"  # the bundled photos verify reads

    rng = random.Random(0)
    names = ("rocket.jpg", "chelsea.png", "retina.jpg")
    sources = []
    for name in names:
        with Image.open(photos / name) as im:
            sources.append(im.convert("RGB"))
    paths = []
    for i in range(count):
        k = i % len(names)
        path = root / Path(names[k]).stem / f"{i:05d}.jpg"
        paths.append(path)
        if path.exists():
            continue
        img = sources[k]
        w, h = img.size
        cw, ch = rng.randint(w // 2, w), rng.randint(h // 2, h)
        left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
        view = img.crop((left, top, left + cw, top + ch)).resize(
            (rng.randint(400, 500), rng.randint(300, 375)))
        if rng.random() < 0.5:
            view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path.parent.mkdir(parents=True, exist_ok=True)
        view.save(path, quality=90)
    return paths


def make_model(root: Path) -> Path:
    from msn_cli.conversion.convert import convert
    from msn_cli.dev.synth import arch_for, write_checkpoint
    from msn_cli.transfer.sources import resolve_source

    folder = root / "vits16-random"
    if not (folder / "model.safetensors").exists():
        ckpt = write_checkpoint(root / "vits16-random.pth.tar", arch_for("vits16"), "released")
        convert(resolve_source(str(ckpt)), folder, verify=False, force=True)
        ckpt.unlink()
    return folder


def msn_pass(folder: Path, paths: list[Path], batch: int, device: str, workers: int | None):
    from msn_cli.fewshot.features import compute_features
    from msn_cli.fewshot.model import load_model
    from msn_cli.fewshot.store import FeatureStore

    model = load_model(str(folder), device=device)

    def run(items: list[Path]) -> float:
        started = time.perf_counter()
        compute_features(model, items, FeatureStore(None, model.width), batch_size=batch,
                         workers=workers)
        return time.perf_counter() - started

    return run


def plain_pass(folder: Path, paths: list[Path], batch: int, device: str):
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, ViTMSNModel

    processor = AutoImageProcessor.from_pretrained(str(folder))
    model = ViTMSNModel.from_pretrained(str(folder)).eval().to(device)

    def run(items: list[Path]) -> float:
        started = time.perf_counter()
        for i in range(0, len(items), batch):
            images = []
            for p in items[i:i + batch]:
                with Image.open(p) as im:
                    images.append(im.convert("RGB"))
            pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(device)
            with torch.inference_mode():
                model(pixel_values=pixels).last_hidden_state[:, 0].cpu()
        return time.perf_counter() - started

    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--workers", type=int, default=None, help="msn's decoding threads")
    args = ap.parse_args(argv)

    import torch
    import transformers

    SCRATCH.mkdir(parents=True, exist_ok=True)
    paths = make_images(SCRATCH / "images", args.images)
    folder = make_model(SCRATCH)
    runners = {"msn": msn_pass(folder, paths, args.batch_size, args.device, args.workers),
               "transformers": plain_pass(folder, paths, args.batch_size, args.device)}
    for run in runners.values():  # warm-up: one batch each (allocator, kernels, file cache)
        run(paths[:args.batch_size])
    rates: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners)
    for r in range(args.runs):
        for name in order if r % 2 == 0 else order[::-1]:
            seconds = runners[name](paths)
            rates[name].append(len(paths) / seconds)
            print(f"  round {r + 1}: {name} {len(paths) / seconds:.1f} images/s", file=sys.stderr)
    med = {name: statistics.median(v) for name, v in rates.items()}
    device = torch.cuda.get_device_name() if args.device == "cuda" else \
        f"CPU, {os.cpu_count()} cores ({platform.machine()})"
    print("## Feature pass (msn fewshot)\n")
    print(f"{len(paths)} JPEGs (about 500x375) through a random-weight ViT-S/16-shaped folder, "
          f"batch {args.batch_size}, {device}, torch {torch.__version__}, transformers "
          f"{transformers.__version__}; median of {args.runs} alternating runs, same process.\n")
    print("| feature pass | images/s (median) | runs | vs transformers |")
    print("|---|---|---|---|")
    for name in runners:
        runs = ", ".join(f"{v:.1f}" for v in rates[name])
        print(f"| {name} | {med[name]:.1f} | {runs} | {med[name] / med['transformers']:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
