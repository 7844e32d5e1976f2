"""DLRM-DCNv2 as torchrec's DLRM_DCN computes it, in plain PyTorch.

dense (B, 13) -> dense arch MLP (ReLU after every layer) -> (B, D)
sparse: 26 multi-hot features, each a sum-pooled bag over its own table -> (B, 26, D)
[dense | sparse] flattened (B, 27 D) -> low-rank DCN-v2 cross net:
    x_{l+1} = x_0 * (W_l (V_l x_l) + b_l) + x_l
-> over arch (MLP with ReLU, then a final Linear to 1 logit) -> sigmoid.

Parameter names follow torchrec's module paths (dense_arch.model._mlp.0._linear.weight,
inter_arch.crossnet.V_kernels.0, over_arch.model.1.weight, ...), so a state dict taken from a
torchrec DLRM_DCN loads unchanged. Embedding tables live outside the module (see Tables):
small ones as tensors on the device, big ones memory-mapped on the host.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Perceptron(nn.Module):
    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self._linear = nn.Linear(n_in, n_out, bias=True)

    def forward(self, x):
        return torch.relu(self._linear(x))


class MLP(nn.Module):
    def __init__(self, n_in: int, sizes: list[int]):
        super().__init__()
        dims = [n_in] + list(sizes)
        self._mlp = nn.Sequential(*[Perceptron(a, b) for a, b in zip(dims[:-1], dims[1:])])

    def forward(self, x):
        return self._mlp(x)


class DenseArch(nn.Module):
    def __init__(self, n_in: int, sizes: list[int]):
        super().__init__()
        self.model = MLP(n_in, sizes)

    def forward(self, x):
        return self.model(x)


class LowRankCrossNet(nn.Module):
    def __init__(self, n_in: int, num_layers: int, low_rank: int):
        super().__init__()
        self.num_layers = num_layers
        self.W_kernels = nn.ParameterList([nn.Parameter(torch.empty(n_in, low_rank)) for _ in range(num_layers)])
        self.V_kernels = nn.ParameterList([nn.Parameter(torch.empty(low_rank, n_in)) for _ in range(num_layers)])
        self.bias = nn.ParameterList([nn.Parameter(torch.zeros(n_in)) for _ in range(num_layers)])

    def forward(self, x0):
        x = x0
        for i in range(self.num_layers):
            xw = F.linear(F.linear(x, self.V_kernels[i]), self.W_kernels[i])
            x = x0 * (xw + self.bias[i]) + x
        return x


class InteractionDCNArch(nn.Module):
    def __init__(self, crossnet: LowRankCrossNet):
        super().__init__()
        self.crossnet = crossnet

    def forward(self, dense, sparse):
        combined = torch.cat((dense.unsqueeze(1), sparse), dim=1)
        return self.crossnet(combined.reshape(dense.shape[0], -1))


class OverArch(nn.Module):
    def __init__(self, n_in: int, sizes: list[int]):
        super().__init__()
        self.model = nn.Sequential(MLP(n_in, sizes[:-1]), nn.Linear(sizes[-2], sizes[-1], bias=True))

    def forward(self, x):
        return self.model(x)


class RowShards:
    """One table split row-wise over several devices: shard j holds rows [bounds[j], bounds[j+1])
    on devices[j] (torchrec's row-wise sharding). Each shard pools the indices that fall in its
    rows (the others weigh 0) and the partial sums are added on the first device."""

    def __init__(self, table: np.ndarray, devices: list[torch.device], dtype: torch.dtype):
        rows = table.shape[0]
        k = len(devices)
        self.bounds = [rows * j // k for j in range(k + 1)]
        self.shards = [torch.from_numpy(np.array(table[lo:hi])).to(device=d, dtype=dtype)
                       for lo, hi, d in zip(self.bounds[:-1], self.bounds[1:], devices)]

    def pool(self, ids: torch.Tensor, out_device: torch.device) -> torch.Tensor:
        total = None
        for lo, hi, w in zip(self.bounds[:-1], self.bounds[1:], self.shards):
            on = (ids >= lo) & (ids < hi)
            local = torch.where(on, ids - lo, torch.zeros_like(ids)).to(w.device)
            part = F.embedding_bag(local, w, mode="sum", per_sample_weights=on.to(device=w.device, dtype=w.dtype))
            part = part.to(out_device)
            total = part if total is None else total + part
        return total


class Tables:
    """The 26 embedding tables, each a tensor on the compute device, row-wise shards over the
    partition's devices (RowShards), or a read-only memory map on the host (tables of tens of GB:
    only the rows a batch touches are read).

    The device and host paths pool with F.embedding_bag(mode="sum"): the host path first gathers
    the touched rows, then bags them by position, so the sum runs in the same kernel and order and
    both give the same bits. Sharded tables add per-shard partial sums: equal up to rounding."""

    def __init__(self, tables: list, device: torch.device, dtype: torch.dtype):
        self.tables = tables
        self.device = device
        self.dtype = dtype

    def on_host(self) -> list[int]:
        return [k for k, t in enumerate(self.tables) if isinstance(t, np.ndarray)]

    def sharded(self) -> list[int]:
        return [k for k, t in enumerate(self.tables) if isinstance(t, RowShards)]

    def pool(self, k: int, idx: np.ndarray) -> torch.Tensor:
        """Sum-pooled embeddings (B, D) for the (B, hot) int32 indices of feature k."""
        t = self.tables[k]
        b, hot = idx.shape
        if isinstance(t, np.ndarray):
            rows = torch.from_numpy(np.ascontiguousarray(t[idx.reshape(-1)]))
            bags = torch.arange(b * hot, dtype=torch.int64).view(b, hot)
            out = F.embedding_bag(bags, rows, mode="sum")
            return out.to(device=self.device, dtype=self.dtype)
        ids = torch.from_numpy(np.ascontiguousarray(idx, dtype=np.int64))
        if isinstance(t, RowShards):
            return t.pool(ids, self.device).to(self.dtype)
        return F.embedding_bag(ids.to(self.device), t, mode="sum").to(self.dtype)


class DLRMDCN(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        d = int(cfg["embedding_dim"])
        n_sparse = len(cfg["num_embeddings_per_feature"])
        self.dense_arch = DenseArch(int(cfg["dense_in_features"]), list(cfg["dense_arch_layer_sizes"]))
        n_cross = d * (n_sparse + 1)
        self.inter_arch = InteractionDCNArch(
            LowRankCrossNet(n_cross, int(cfg["dcn_num_layers"]), int(cfg["dcn_low_rank_dim"])))
        self.over_arch = OverArch(n_cross, list(cfg["over_arch_layer_sizes"]))
        self.tables: Tables | None = None

    def forward(self, dense: torch.Tensor, sparse: list[np.ndarray]) -> torch.Tensor:
        """Click probabilities (B,) for dense (B, 13) on the device and 26 (B, hot) index arrays."""
        pooled = torch.stack([self.tables.pool(k, idx) for k, idx in enumerate(sparse)], dim=1)
        x = self.inter_arch(self.dense_arch(dense), pooled)
        return torch.sigmoid(self.over_arch(x)).reshape(-1)
