"""Data-parallel plumbing shared by the trainers (GAN, segmenters): join the process group torchrun describes,
average gradients, check that replicas stay identical. Everything is a no-op in a single process."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


class Dist:
    """Rank, world size and gradient averaging; a no-op outside torch.distributed."""

    def __init__(self) -> None:
        self.on = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.on else 0
        self.world = dist.get_world_size() if self.on else 1

    def average_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Average grads across processes in one flat all-reduce; also zero NaN/Inf as stylegan2-ada does."""
        params = [p for p in params if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.flatten() for g in grads])
        if self.on and self.world > 1:
            dist.all_reduce(flat)
            flat /= self.world
        flat = torch.nan_to_num(flat, nan=0.0, posinf=1e5, neginf=-1e5)
        for p, g in zip(params, flat.split([p.numel() for p in params]), strict=True):
            p.grad = g.view_as(p)

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        if self.on and self.world > 1:
            x = x.clone()
            dist.all_reduce(x)
            x /= self.world
        return x

    def max_divergence(self, module: torch.nn.Module) -> float:
        """Largest difference between this process's parameters and floating-point buffers (BatchNorm statistics,
        the running W mean) and rank 0's: 0.0 when the replicas are in sync."""
        if not (self.on and self.world > 1):
            return 0.0
        tensors = [*module.parameters(), *(b for b in module.buffers() if b.is_floating_point())]
        flat = torch.cat([t.detach().float().flatten() for t in tensors])
        ref = flat.clone()
        dist.broadcast(ref, src=0)
        diff = (flat - ref).abs().max()
        dist.all_reduce(diff, op=dist.ReduceOp.MAX)
        return float(diff)

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every process if `flag` is true on any: a stop request makes all processes leave together."""
        if not (self.on and self.world > 1):
            return flag
        t = torch.tensor([float(flag)], device=device)
        dist.all_reduce(t)
        return bool(t.item())

    def check_replicas(self, step: int, *modules: torch.nn.Module) -> dict:
        """Before a checkpoint: the log record of the replica check; a RuntimeError if any parameter or
        floating-point buffer differs from rank 0's (a checkpoint of drifted replicas is never written)."""
        div = max(self.max_divergence(m) for m in modules)
        if div > 0:
            raise RuntimeError(f"DDP replicas diverged at step {step} (max parameter/buffer diff {div})")
        return {"step": step, "event": "ddp_sync", "world": self.world, "max_param_diff": div}

    def broadcast_(self, module: torch.nn.Module) -> None:
        if self.on and self.world > 1:
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, src=0)


def init_distributed_from_env(device: str | torch.device | None = None) -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1): NCCL when training on CUDA, else gloo.

    device: what the caller will train on (None: CUDA if present). `--device cpu` on a GPU machine must get
    gloo, since NCCL cannot reduce CPU tensors.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    on_cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    backend = "nccl" if on_cuda else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend)
    return True
