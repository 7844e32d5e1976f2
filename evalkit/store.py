"""Loaded samples, kept where the model runs.

LoadGen's load callback runs outside its timed part: that is when samples are put in
their compact stored form (Benchmark.store_sample). When a model's stored samples are
torch tensors of one shape and dtype, the store stacks each load into one tensor on the
device (within a memory budget), or in pinned host memory when it does not fit (one
note, never an out-of-memory crash), and a batch is an index_select there, handed to
Benchmark.batch_from_store. Other samples (prompts, variable-size items) stay host
objects and go through Benchmark.make_batch, as before.

Budget: EVALKIT_STORE_GB (GiB on the device); default: half of the device's free memory
when the load happens. CPU runs keep the store in host memory.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Sequence

from .errors import KitError

BUDGET_ENV = "EVALKIT_STORE_GB"


def device_budget(device: str) -> int:
    """Bytes the store may take on `device`."""
    if os.environ.get(BUDGET_ENV):
        try:
            return int(float(os.environ[BUDGET_ENV]) * 2**30)
        except ValueError:
            raise KitError(f"{BUDGET_ENV}={os.environ[BUDGET_ENV]!r} is not a number of GiB") from None
    if device.startswith("cuda"):
        import torch
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return free // 2
    return 1 << 62  # host memory: the OS decides


class SampleLoadError(Exception):
    """Benchmark.store_sample failed for the sample at partition-local `index` (the runner names it
    by its global qsl_idx)."""

    def __init__(self, index: int, cause: BaseException):
        super().__init__(index, cause)
        self.index, self.cause = index, cause


class SampleStore:
    """Partition-local index -> stored sample. Not thread-safe across load/unload and batch:
    LoadGen never issues a query for samples it is loading or unloading."""

    def __init__(self, bench, device: str, data_type: str, options: dict):
        self.bench, self.device, self.data_type, self.options = bench, device.split(",")[0], data_type, options
        self.objects: dict[int, Any] = {}                 # host objects (make_batch path)
        self.rows: dict[int, tuple[int, int]] = {}        # index -> (chunk id, row) (tensor path)
        self.chunks: dict[int, Any] = {}                  # chunk id -> stacked tensor
        self.live: dict[int, int] = {}                    # chunk id -> rows still loaded
        self.where: str | None = None                     # "device", "pinned" or "host"
        self.used = 0
        self._next = 0
        self.noted = False

    def __contains__(self, i: int) -> bool:
        return i in self.rows or i in self.objects

    def __len__(self) -> int:
        return len(self.rows) + len(self.objects)

    def load(self, items: Sequence[tuple[int, Any]]) -> None:
        """(index, dataset sample) of one LoadGen load call."""
        import torch

        if not items:
            return
        stored = []
        for i, s in items:
            try:
                stored.append(self.bench.store_sample(s))
            except Exception as e:
                raise SampleLoadError(i, e) from e
        if not all(isinstance(t, torch.Tensor) for t in stored) or \
                len({(tuple(t.shape), t.dtype) for t in stored}) != 1:
            self.objects.update((i, t) for (i, _), t in zip(items, stored))
            return
        chunk = torch.stack(stored)
        nbytes = chunk.element_size() * chunk.nelement()
        if self.device == "cpu":
            self.where = "host"
        elif self.used + nbytes <= device_budget(self.device):
            chunk = chunk.to(self.device)
            self.where = "device"
        else:
            chunk = chunk.pin_memory()
            self.where = "pinned"
            if not self.noted:
                self.noted = True
                print(f"note: {len(items)} samples ({nbytes / 2**20:.0f} MiB) do not fit the device store budget "
                      f"({BUDGET_ENV}); they stay in pinned host memory and are copied per batch", file=sys.stderr)
        cid = self._next
        self._next += 1
        self.chunks[cid] = chunk
        self.live[cid] = len(items)
        self.used += nbytes
        for row, (i, _) in enumerate(items):
            self.rows[i] = (cid, row)

    def unload(self, indices: Sequence[int]) -> None:
        for i in indices:
            self.objects.pop(i, None)
            hit = self.rows.pop(i, None)
            if hit is None:
                continue
            cid = hit[0]
            self.live[cid] -= 1
            if not self.live[cid]:
                chunk = self.chunks.pop(cid)
                self.used -= chunk.element_size() * chunk.nelement()
                del self.live[cid]

    def gather(self, indices: Sequence[int]):
        """Stored tensors of these samples, stacked [B, ...], on the model's device."""
        import torch

        by_chunk: dict[int, list[int]] = {}
        order = []
        for i in indices:
            cid, row = self.rows[i]
            by_chunk.setdefault(cid, []).append(row)
            order.append(cid)
        if len(by_chunk) == 1:
            (cid, rows), = by_chunk.items()
            chunk = self.chunks[cid]
            x = chunk.index_select(0, torch.as_tensor(rows, device=chunk.device))
        else:  # rare: a batch spans two loads
            x = torch.stack([self.chunks[self.rows[i][0]][self.rows[i][1]] for i in indices])
        return x.to(self.device, non_blocking=True)

    def batch(self, indices: Sequence[int]) -> Any:
        """The model's input for these samples (partition-local indices)."""
        missing = [i for i in indices if i not in self]
        if missing:  # LoadGen issued what its load callback did not load: name it, never a bare KeyError
            raise KitError(f"partition-local sample {missing[0]} was issued but is not loaded (its load failed "
                           f"or it was unloaded); {len(missing)} of the batch's {len(indices)} samples are missing")
        if indices and indices[0] in self.rows:
            return self.bench.batch_from_store(self.gather(indices), self.device, self.data_type, self.options)
        return self.bench.make_batch([self.objects[i] for i in indices], self.device, self.data_type, self.options)
