"""OGEN's adaptive local mean teacher (Zang et al., "Overcoming the pitfalls of vision-language model
finetuning for OOD generalization", ICLR 2024), for pseudo labels.

Pseudo labels come from an average of the teacher's recent predictions for each point, over a window that
grows during training, blended with their spatial neighbourhood mean: a steadier teacher than one step's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from geot.labels import NUM_CLASSES
from geot.modules import StepContext, TargetTransform, register
from geot.modules.state import PointMemory
from geot.ops import knn


def neighbourhood_mean(values: Tensor, pos: Tensor, batch: Tensor, k: int) -> Tensor:
    """Mean of ``values`` over each point's ``k`` nearest points (itself included) in its own scan."""
    query, neighbour = knn(pos, pos, k, batch, batch)
    sums = torch.zeros_like(values).index_add_(0, query, values[neighbour])
    counts = torch.bincount(query, minlength=len(values)).clamp(min=1).to(values)
    return sums / counts[:, None]


@register
class AdaptiveLocalMeanTeacher(TargetTransform):
    """Pseudo labels from a per-point average of the teacher's recent predictions, spatially smoothed.

    OGEN's teacher is the average of the student's recent states over a window W_t that grows during
    training. Here the average runs over the teacher's predictions for each point (a ``PointMemory``): an
    EMA with momentum 1 - 1/W_e, where W_e grows linearly from ``window_min`` to ``window_max`` visits of
    the point over the run. The result is blended with its mean over the ``k`` nearest points of the scan
    (weight ``spatial``). Hard targets come back as the one-hot argmax of the blend; soft targets are
    replaced by it. Window sizes and the spatial blend are not verified (OGEN gives no point-cloud values).
    """

    name = "local_mean_teacher"

    def __init__(self, weight: float = 1.0, schedule=None, window_min: float = 1.0, window_max: float = 5.0,
                 spatial: float = 0.3, k: int = 8, num_classes: int = NUM_CLASSES) -> None:
        super().__init__(weight, schedule)
        self.window_min, self.window_max, self.spatial, self.k = window_min, window_max, spatial, k
        self.memory = PointMemory(num_classes)

    def window(self, epoch: int, epochs: int) -> float:
        progress = epoch / max(epochs - 1, 1)
        return self.window_min + (self.window_max - self.window_min) * min(max(progress, 0.0), 1.0)

    def forward(self, ctx: StepContext, targets: Tensor) -> Tensor:
        momentum = 1.0 - 1.0 / max(self.window(ctx.epoch, ctx.epochs), 1.0)
        unl = ctx.unl
        index = unl.point_index.cpu()
        previous, seen = self.memory.get(index)
        probs = unl.probs_teacher.detach()
        previous, seen = previous.to(probs), seen.to(probs.device)
        mean = torch.where(seen[:, None], momentum * previous + (1 - momentum) * probs, probs)
        self.memory.set(index, mean.cpu())
        if self.spatial > 0:
            mean = (1 - self.spatial) * mean + self.spatial * neighbourhood_mean(mean, unl.pos, unl.batch, self.k)
        mean = mean / mean.sum(dim=1, keepdim=True)
        if bool((targets.max(dim=1).values == 1).all()):
            return F.one_hot(mean.argmax(dim=1), targets.shape[1]).to(targets)
        return mean.to(targets)
