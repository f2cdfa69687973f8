"""Deterministic streams of training batches.

A *clip source* is a callable `index -> TrackingSample` that depends only on its construction
arguments (data seed, rank) and the index (optionally with a `batch(indices)` method that makes
several clips at once, used in the main process): the whole data order is then the sample index, so a
resumed run picks up at index `step * accumulation * batch` and sees exactly the clips an
uninterrupted run would, with or without DataLoader workers, whatever the worker count.

`batch_stream` turns a source into `make_batch` dicts on the training device, either in the
main process (the synthetic engine then renders on the training device, GPU included) or in
DataLoader worker processes (rendering on CPU, batches pinned and copied asynchronously).
"""

from __future__ import annotations

import functools
import itertools
import sys
from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from taptr.training.batch import make_batch

ClipSource = Callable[[int], object]


class IndexedClips(Dataset):
    """Map-style view of a clip source, for DataLoader workers."""

    def __init__(self, source: ClipSource):
        self.source = source

    def __len__(self) -> int:
        return sys.maxsize

    def __getitem__(self, index: int):
        return self.source(int(index))


def _collate(samples: list, input_size: tuple[int, int]) -> dict[str, torch.Tensor]:
    return make_batch([sample.to("cpu") if hasattr(sample, "to") else sample
                       for sample in samples], input_size, device="cpu")


def _move(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {name: tensor.to(device, non_blocking=True) for name, tensor in batch.items()}


def batch_stream(source: ClipSource, batch_size: int, input_size: tuple[int, int],
                 start_index: int, device: torch.device, workers: int = 0,
                 loader_seed: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches of `batch_size` consecutive clip indices from `start_index` on.

    workers = 0: clips are made in this process (on whatever device the source renders) and
    batched on `device`. workers > 0: a DataLoader makes and batches them on CPU in worker
    processes, and batches are copied to `device` (pinned memory on CUDA). Both give the same
    batches for the same source. `loader_seed` seeds the DataLoader's own generator so that it
    never draws from the global torch generator (which would break exact resume).
    """
    if workers <= 0:
        render_together = getattr(source, "batch", None)
        for first in itertools.count(start_index, batch_size):
            indices = range(first, first + batch_size)
            samples = (render_together(indices) if render_together is not None
                       else [source(index) for index in indices])
            yield make_batch(samples, input_size, device=device)
        return
    loader = DataLoader(
        IndexedClips(source),
        batch_size=batch_size,
        sampler=range(start_index, sys.maxsize),
        num_workers=workers,
        collate_fn=functools.partial(_collate, input_size=tuple(input_size)),
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=2,
        generator=torch.Generator().manual_seed(loader_seed),
    )
    for batch in loader:
        yield _move(batch, device)
