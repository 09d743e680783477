"""The feature pass: images read, hashed and decoded in worker threads, streamed to the network
in batches, each image's feature looked up in (or added to) the feature cache.

Memory is bounded by the batch: at most ``batch_size + 2 * workers`` decoded images exist at
once, whatever the number of images. Reading, hashing, PIL's decoding and resizing and numpy's
normalisation release the GIL, so the workers run beside the forward pass.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from msn_cli.fewshot.data import decode_image, quiet_bomb_warning, read_image
from msn_cli.progress import ProgressFn, no_progress

if TYPE_CHECKING:
    import numpy as np

    from msn_cli.fewshot.model import FeatureModel
    from msn_cli.fewshot.store import FeatureStore

STAGE = "features"
T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


@dataclass
class FeaturePass:
    """The features of some images, in their order, and what computing them cost."""

    features: np.ndarray
    hashes: list[str]
    computed: int
    cached: int
    seconds: float

    @property
    def images_per_second(self) -> float | None:
        """Images computed per second of the pass (None when every image was cached)."""
        return self.computed / self.seconds if self.computed and self.seconds > 0 else None


def ordered_map(pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Sequence[T],
                ahead: int) -> Iterator[R]:
    """``fn`` over ``items`` in the pool, results in order, at most ``ahead`` in flight."""
    queue: deque[Future[R]] = deque()
    it = iter(items)
    for item in it:
        queue.append(pool.submit(fn, item))
        if len(queue) >= ahead:
            break
    while queue:
        result = queue.popleft().result()
        for item in it:
            queue.append(pool.submit(fn, item))
            break
        yield result


def compute_features(model: FeatureModel, paths: Sequence[Path], store: FeatureStore, *,
                     batch_size: int = 64, workers: int | None = None,
                     progress: ProgressFn = no_progress) -> FeaturePass:
    """The pre-norm cls feature of every image in ``paths`` (n x width, float32)."""
    import numpy as np
    import torch

    workers = workers or default_workers()
    out = np.empty((len(paths), model.width), dtype=np.float32)
    hashes: list[str] = [""] * len(paths)
    batch_index: list[int] = []
    batch_pixels: list[np.ndarray] = []
    computed = 0

    def prepare(path: Path) -> tuple[str, np.ndarray | None]:
        digest, data = read_image(path)
        if store.get(digest) is not None:
            return digest, None
        return digest, model.transform(decode_image(path, data))

    def run_batch() -> None:
        x = torch.from_numpy(np.stack(batch_pixels)).to(model.device)
        with torch.inference_mode():
            rows = model.forward(x).float().cpu().numpy()
        out[batch_index] = rows
        store.add([hashes[i] for i in batch_index], rows)
        batch_index.clear()
        batch_pixels.clear()

    quiet_bomb_warning()
    started = time.perf_counter()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="msn-images")
    try:
        progress(STAGE, 0, len(paths))
        for i, (digest, pixels) in enumerate(ordered_map(pool, prepare, paths, 2 * workers + 2)):
            hashes[i] = digest
            if pixels is None:
                cached = store.get(digest)
                assert cached is not None
                out[i] = cached
            else:
                batch_index.append(i)
                batch_pixels.append(pixels)
                computed += 1
                if len(batch_pixels) >= batch_size:
                    run_batch()
            progress(STAGE, i + 1, len(paths))
        if batch_pixels:
            run_batch()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    seconds = time.perf_counter() - started
    store.flush()
    return FeaturePass(out, hashes, computed, len(paths) - computed, seconds)
