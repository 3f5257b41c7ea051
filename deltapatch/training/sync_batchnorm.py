"""BatchNorm statistics synchronised across DDP ranks, on GPUs and on CPUs (gloo), in place.

``trainer.sync_batchnorm=true`` makes every rank's training BatchNorm (the ∆-modules', a
fine-tuned backbone's) normalise with the statistics of the global batch, so a run on N devices
with per-rank batch B/N trains like one process with batch B. Lightning's own plugin
(``TorchSyncBatchNorm``) does not serve this project:

- torch's ``SyncBatchNorm`` refuses CPU tensors ("SyncBatchNorm layers only work with GPU
  modules"), so ``accelerator=cpu`` (the DDP tests, a CPU cluster) cannot use it;
- it *replaces* each BatchNorm by a new module: forward hooks that methods put on base BatchNorm
  layers (``bn_adapt``) are lost, and references held elsewhere point at the old module; after
  training it puts back a ``_BatchNormXd``, no longer a ``BatchNorm2d``.

:class:`BatchNormSync` changes the class of each BatchNorm in place instead (same object, same
parameters, buffers and hooks) and changes it back after ``fit``: to torch's ``SyncBatchNorm`` on
GPUs, to :class:`GlooBatchNorm` (the same statistics with differentiable all-reduces) elsewhere.
A BatchNorm in eval mode (the frozen base's) uses its running statistics and syncs nothing.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from pytorch_lightning.plugins.layer_sync import LayerSync
from torch import nn

from ..data.base import in_process_group

_PLAIN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of a sum is the sum of the ranks' gradients (torch's own
    ``torch.distributed.nn.functional.all_reduce`` is deprecated)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _AllReduceSum.apply(grad)


def all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(tensor)


class GlooBatchNorm(nn.modules.batchnorm._BatchNorm):
    """A BatchNorm whose training statistics are those of the batch over every DDP rank.

    Mean and variance are computed in two passes over all ranks (sum and count, then the sum of
    squared deviations), each an autograd-aware all-reduce, so gradients flow to the other ranks'
    samples as in torch's ``SyncBatchNorm``. Only instances made by :class:`BatchNormSync` exist
    (their class is swapped in place); ``_plain`` holds the class to go back to.
    """

    _plain: type

    def _check_input_dim(self, input: torch.Tensor) -> None:
        self._plain._check_input_dim(self, input)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not in_process_group() or dist.get_world_size() == 1:
            return self._plain.forward(self, x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        count = x.new_tensor([x.numel() // x.shape[1]], dtype=torch.float32)
        totals = all_reduce(torch.cat([xf.sum(dims), count]))
        n = totals[-1]
        mean = totals[:-1] / n
        centred = xf - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / n  # biased: what normalises the batch
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach().to(self.running_mean.dtype), alpha=m)
                unbiased = var.detach() * (n / max(float(n) - 1, 1.0))
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        return y.to(x.dtype)


# one synced class per plain class, so isinstance(m, nn.BatchNorm2d) stays true while synced
class GlooBatchNorm1d(GlooBatchNorm, nn.BatchNorm1d):
    _plain = nn.BatchNorm1d


class GlooBatchNorm2d(GlooBatchNorm, nn.BatchNorm2d):
    _plain = nn.BatchNorm2d


class GlooBatchNorm3d(GlooBatchNorm, nn.BatchNorm3d):
    _plain = nn.BatchNorm3d


_GLOO = {cls._plain: cls for cls in (GlooBatchNorm1d, GlooBatchNorm2d, GlooBatchNorm3d)}


class BatchNormSync(LayerSync):
    """Lightning's layer-sync plugin for ``trainer.sync_batchnorm=true`` (see the module doc):
    swaps each plain BatchNorm's class in place, and back in :meth:`revert`."""

    def apply(self, model: nn.Module) -> nn.Module:
        for module in model.modules():
            plain = type(module)
            if plain not in _PLAIN:
                continue
            ref = module.running_mean if module.running_mean is not None else module.weight
            if ref is not None and ref.is_cuda:
                module.__class__ = nn.SyncBatchNorm
                module.process_group = None  # the whole world, as convert_sync_batchnorm does
            else:
                module.__class__ = _GLOO[plain]
            module._unsynced_class = plain
        return model

    def revert(self, model: nn.Module) -> nn.Module:
        for module in model.modules():
            plain = module.__dict__.pop("_unsynced_class", None)
            if plain is not None:
                module.__dict__.pop("process_group", None)
                module.__class__ = plain
        return model
