"""Training on several processes: torchrun's environment, the process group, and the global batch across ranks.

`wsvs-train fit` reads only what torchrun (torch.distributed.run) puts in each worker's environment: RANK,
WORLD_SIZE, LOCAL_RANK and the env:// rendezvous (MASTER_ADDR, MASTER_PORT). So one machine
(`--nproc_per_node=N`), several machines (`--nnodes`, `--rdzv-backend c10d`, `--rdzv-endpoint`) and elastic restarts
(`--max-restarts`) need nothing from the config. Without WORLD_SIZE (or with WORLD_SIZE=1) it is one plain process.

Every rank computes the same thing one process would compute on the global batch (WORLD_SIZE x batch_size frames):
each takes its contiguous share of the global batch's indices (`rank_share`), DistributedDataParallel averages the
gradients of the per-rank mean losses (= the gradient of the mean over the global batch, the shares being equal),
dropout masks are rows of one mask drawn for the global batch (`GlobalBatchDropout`), and batch norm normalises
with the global batch's statistics (`GlobalBatchNorm2d`). What differs from one process is the order of floating
point sums (convolutions over fewer frames, the all-reduce), not the arithmetic: see docs/distributed.md.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")

CACHE_FILL_TIMEOUT = timedelta(hours=24)
"""How long the ranks wait for each other while the flow and heatmap caches are filled (`barrier`). Filling a
large dataset's caches on a first run can take hours, far past the process group's default timeout (10 minutes with
NCCL), which is right for a hung collective in the training loop but not for this."""


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (torchrun's RANK, WORLD_SIZE, LOCAL_RANK)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, the CSV log, plots and shows the progress bar."""
        return self.rank == 0


SINGLE = World()


def world_from_env(environ: Mapping[str, str] = os.environ) -> World:
    """The World torchrun describes in `environ`; SINGLE outside torchrun.

    Raises:
        ValueError: a variable is not an integer, or RANK / LOCAL_RANK are out of range.
    """
    try:
        size = int(environ.get("WORLD_SIZE", "1"))
        rank = int(environ.get("RANK", "0"))
        local_rank = int(environ.get("LOCAL_RANK", "0"))
    except ValueError as e:
        raise ValueError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them): {e}") from e
    if size < 1 or not 0 <= rank < size or local_rank < 0:
        raise ValueError(f"RANK={rank}, WORLD_SIZE={size}, LOCAL_RANK={local_rank}: need 0 <= RANK < WORLD_SIZE")
    return World(rank=rank, size=size, local_rank=local_rank)


def rank_device(name: str, world: World) -> torch.device:
    """The device this rank trains on: the config's device, with CUDA ranks on GPU LOCAL_RANK of their machine.

    Raises:
        ValueError: a multi-process run names one GPU ("cuda:1"), or LOCAL_RANK has no GPU on this machine.
    """
    device = torch.device(name)
    if device.type != "cuda" or not world.distributed:
        return device
    if device.index is not None:
        raise ValueError(
            f"device={name} pins one GPU, but torchrun started {world.size} processes; set device: cuda (each "
            "process takes the GPU of its LOCAL_RANK) and choose GPUs with CUDA_VISIBLE_DEVICES"
        )
    count = torch.cuda.device_count()
    if world.local_rank >= count:
        raise ValueError(
            f"LOCAL_RANK={world.local_rank} but this machine has {count} GPU(s): start at most {count} processes per "
            "machine (--nproc_per_node)"
        )
    return torch.device("cuda", world.local_rank)


_cache_group: dist.ProcessGroup | None = None


@contextlib.contextmanager
def process_group(device: torch.device, world: World) -> Iterator[None]:
    """Join the other ranks (env:// rendezvous, NCCL on CUDA, gloo on CPU) for the duration of the block.

    Nothing happens for a single process, or when the caller already initialised a process group (the caller then
    destroys it, and `barrier` waits with that group's timeout).
    """
    global _cache_group
    if not world.distributed or dist.is_initialized():
        yield
        return
    if world.is_main and _restarts_share_a_store(os.environ):
        warnings.warn(
            "torchrun --max-restarts with its rendezvous store shared with the workers: restarted workers can read "
            "the previous attempt's addresses and fail to connect (pytorch/pytorch#135712); start torchrun with "
            "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in its environment (docs/distributed.md)",
            RuntimeWarning,
            stacklevel=3,
        )
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", init_method="env://", device_id=device)
    else:
        dist.init_process_group("gloo", init_method="env://")
    _cache_group = dist.new_group(backend="gloo", timeout=CACHE_FILL_TIMEOUT)
    try:
        yield
    finally:
        _cache_group = None
        dist.destroy_process_group()


def _restarts_share_a_store(environ: Mapping[str, str]) -> bool:
    """Whether torchrun may restart the workers while they use its own TCP store, which keeps the previous
    attempt's keys (gloo's and NCCL's peer addresses among them)."""
    restarts = int(environ.get("TORCHELASTIC_MAX_RESTARTS", "0"))
    return restarts > 0 and environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"


def rank_share(items: Sequence[T], world: World) -> list[T]:
    """This rank's contiguous share of `items`: rank r of N gets items[r * n / N : (r + 1) * n / N] (rounded), so
    the shares of ranks 0..N-1 concatenated are `items` in order."""
    n = len(items)
    return list(items[world.rank * n // world.size : (world.rank + 1) * n // world.size])


def barrier(world: World) -> None:
    """Wait until every rank gets here, for as long as CACHE_FILL_TIMEOUT (ranks filling their share of the caches,
    rank 0 writing the last checkpoint)."""
    if world.distributed:
        dist.barrier(group=_cache_group)


def mean_over_ranks(values: torch.Tensor, world: World) -> torch.Tensor:
    """The mean of `values` over the ranks (a new tensor; `values` itself is left as it is)."""
    if not world.distributed:
        return values
    total = values.detach().clone()
    dist.all_reduce(total)
    return total / world.size


def same_on_all_ranks(value: int, world: World, device: torch.device) -> bool:
    """Whether every rank passed the same `value`."""
    if not world.distributed:
        return True
    both = torch.tensor([value, -value], dtype=torch.float64, device=device)
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    return bool(both[0].item() == -both[1].item())


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """True on every rank when `flag` is True on at least one, so that all ranks stop together."""
    if not world.distributed:
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


# ---------------------------------------------------------------------------------------------------------------------
# The global batch inside the network


class GlobalBatchDropout(nn.Module):
    """Dropout whose mask for this rank's B frames is rows rank*B..(rank+1)*B-1 of one mask drawn for the global
    batch of WORLD_SIZE*B frames. Every rank draws the same global mask (same seed, same draws), so the ranks together
    drop what one process with the global batch drops, and their generators stay in step (one saved RNG state
    resumes them all). For one process on the CPU it draws exactly what `nn.Dropout` draws."""

    def __init__(self, p: float, world: World) -> None:
        super().__init__()
        self.p = p
        self.world = world

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        rows = x.shape[0]
        noise = torch.empty((rows * self.world.size, *x.shape[1:]), dtype=x.dtype, device=x.device)
        noise = noise.bernoulli_(1 - self.p)[self.world.rank * rows : (self.world.rank + 1) * rows]
        return x * noise.div_(1 - self.p)  # as torch's CPU dropout: keep with probability 1 - p, scale by 1 / (1 - p)


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) whose backward all-reduces the gradient: with y = sum_r x_r on every rank and the loss
    the sum of the ranks' losses, dL/dx_r = sum_q dL_q/dy."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


def sum_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """The sum of `x` over all ranks, differentiable (see `_SumOverRanks`)."""
    out = _SumOverRanks.apply(x)
    assert isinstance(out, torch.Tensor)
    return out


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that normalises with the statistics of the global batch across all ranks while training.

    The per-channel sums go through `sum_over_ranks`, whose backward all-reduces their gradients, so each rank's
    gradient (averaged by DDP) is that of the mean loss over the global batch (as for `nn.SyncBatchNorm`, which runs on
    GPUs only; this one runs on CPU/gloo and CUDA/NCCL alike). Same parameters, buffers and state-dict keys as the
    BatchNorm2d it replaces; in eval mode it is that BatchNorm2d. Statistics are taken in float32 under autocast.
    """

    def __init__(self, num_features: int, *, eps: float, momentum: float, world: World) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.world = world

    @classmethod
    def replacing(cls, bn: nn.BatchNorm2d, world: World) -> GlobalBatchNorm2d:
        if not (bn.affine and bn.track_running_stats and bn.momentum is not None):
            raise ValueError("GlobalBatchNorm2d replaces affine BatchNorm2d layers with running statistics only")
        out = cls(bn.num_features, eps=bn.eps, momentum=bn.momentum, world=world).to(bn.weight.device)
        out.load_state_dict(bn.state_dict())
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        # `replacing` made sure there are running statistics, kept as an exponential average
        assert self.running_mean is not None and self.running_var is not None and self.num_batches_tracked is not None
        assert self.momentum is not None
        x32 = x.float()
        count = x32.numel() // x32.shape[1] * self.world.size  # every rank has the same B, H, W
        mean = sum_over_ranks(x32.sum(dim=(0, 2, 3))) / count
        centred = x32 - mean[:, None, None]
        var = sum_over_ranks(centred.square().sum(dim=(0, 2, 3))) / count  # two passes: no E[x^2] - E[x]^2 cancellation
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            self.running_mean.mul_(1 - self.momentum).add_(mean.detach(), alpha=self.momentum)
            unbiased = var.detach() * (count / max(count - 1, 1))  # what BatchNorm2d keeps
            self.running_var.mul_(1 - self.momentum).add_(unbiased, alpha=self.momentum)
        scale = self.weight * torch.rsqrt(var + self.eps)
        return (centred * scale[:, None, None] + self.bias[:, None, None]).to(x.dtype)


def _replace_modules(module: nn.Module, make: Callable[[nn.Module], nn.Module | None]) -> None:
    """Replace every descendant `m` of `module` for which `make(m)` is a module by that module, in place."""
    for name, child in module.named_children():
        new = make(child)
        if new is None:
            _replace_modules(child, make)
        else:
            setattr(module, name, new)


def spread_over_ranks(model: nn.Module, world: World) -> None:
    """Make `model`'s dropout and batch norm see the global batch (`GlobalBatchDropout`, `GlobalBatchNorm2d`), in
    place. Parameters and state-dict keys are unchanged, so checkpoints and training states load either way."""

    def replacement(m: nn.Module) -> nn.Module | None:
        if isinstance(m, nn.Dropout):
            return GlobalBatchDropout(m.p, world)
        if isinstance(m, nn.BatchNorm2d) and world.distributed:
            return GlobalBatchNorm2d.replacing(m, world)
        return None

    _replace_modules(model, replacement)
