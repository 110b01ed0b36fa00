"""Batches of images that stay in host memory (a dataset too large for its share of the device).

A background thread gathers each batch from the host images (often memory-mapped), into pinned
memory on CUDA, and copies it to the device on a side stream, ``depth`` batches ahead of the
training loop; the loop's stream waits for a batch's copy on the device, never on the host.
:class:`DeviceBatches` gives a run's batches from wherever its images are.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import torch

PREFETCH_DEPTH = 4  # batches gathered and copied ahead of the one in use


class HostBatches:
    """Device batches of host ``images`` [N, ...] for given index tensors, prefetched in order."""

    def __init__(self, images: torch.Tensor, device: torch.device, depth: int = PREFETCH_DEPTH):
        self.images, self.device, self.depth = images, device, depth
        self.cuda = device.type == "cuda"
        self.copy_stream = torch.cuda.Stream(device) if self.cuda else None

    def __call__(self, indices: Sequence[torch.Tensor]) -> Iterator[torch.Tensor]:
        """The batches ``images[i]`` for each index tensor in ``indices`` (any device), on the device."""
        if not indices:
            return
        sizes = [len(i) for i in indices]
        host_indices = torch.cat(list(indices)).cpu().split(sizes)  # one host read for the whole epoch
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="focustune-batches") as pool:
            queued: deque[Future] = deque(pool.submit(self._fetch, i) for i in host_indices[:self.depth])
            for following in (*host_indices[self.depth:], *([None] * len(queued))):
                batch, copied = queued.popleft().result()
                if following is not None:
                    queued.append(pool.submit(self._fetch, following))
                if copied is not None:
                    stream = torch.cuda.current_stream(self.device)
                    stream.wait_event(copied)
                    batch.record_stream(stream)  # its memory was allocated on the copy stream
                yield batch

    def _fetch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        """Gather one batch; on CUDA into pinned memory, then start its copy on the side stream."""
        if not self.cuda:
            return self.images.index_select(0, index), None
        pinned = torch.empty((len(index), *self.images.shape[1:]), dtype=self.images.dtype, pin_memory=True)
        torch.index_select(self.images, 0, index, out=pinned)
        with torch.cuda.stream(self.copy_stream):
            batch = pinned.to(self.device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(self.copy_stream)
        return batch, copied


class DeviceBatches:
    """Batches of a run's images on ``device``: indexed there, or (``streamed``: a dataset kept in host
    memory) streamed from host memory by :class:`HostBatches`."""

    def __init__(self, device: torch.device, streamed: bool):
        self.device, self.streamed = device, streamed

    def _from_host(self, images: torch.Tensor) -> bool:
        return self.streamed and images.device.type == "cpu"

    def __call__(self, images: torch.Tensor,
                 indices: Iterable[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(i, images[i])`` on the device for each index tensor ``i`` of ``indices``. Images on the device
        are indexed one batch at a time, each ``i`` taken from ``indices`` only when its batch is due (a
        method may compose a batch from what the one before taught); streamed ones are gathered ahead,
        so their ``indices`` are all drawn first."""
        if self._from_host(images):
            drawn = list(indices)
            return zip(drawn, HostBatches(images, self.device)(drawn))
        return ((index, images[index]) for index in indices)

    def chunks(self, images: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
        """``images`` in consecutive chunks of ``size``, on the device."""
        if self._from_host(images):
            return HostBatches(images, self.device)(torch.arange(len(images)).split(size))
        return iter(images.split(size))
