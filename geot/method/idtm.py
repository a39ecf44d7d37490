"""Instance-dependent transition matrices (IDTM): how a pseudo label may differ from the true class, per point.

Each point gets ``T_i = (1 - w) T_class + w T_ins(i)``, rows summing to 1:

* ``T_class`` is class-level: an EMA of per-batch estimates, blended with the CLGS arch prior. The paper's
  estimate takes the teacher's posterior at the point most confident for each class (``anchor_matrix``);
  ``posterior_confusion`` instead weighs every point's pseudo label by the teacher's belief in each class.
* ``T_ins(i)`` comes from a small head on the point's (detached) clean posterior, conditioned row by row
  on the mean posterior of labelled points of that class.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from geot.labels import NUM_CLASSES
from geot.method.clgs import row_normalise


class IDTMHead(nn.Module):
    """Row k of ``T_ins(i)`` = projection of ``W_k [p_i ; m_k] + b_k``, one linear map per row.

    ``softmax`` projection (default) keeps gradients everywhere and starts near the identity;
    ``clamp`` is the reference's clamp-to-(1e-5, 1-1e-5) then L1 normalisation, without bias.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, projection: str = "softmax", diagonal_init: float = 5.0) -> None:
        super().__init__()
        c = num_classes
        self.projection = projection
        bound = (2 * c) ** -0.5
        self.weight_p = nn.Parameter(torch.empty(c, c, c).uniform_(-bound, bound))  # [row, out, in]
        self.weight_m = nn.Parameter(torch.empty(c, c, c).uniform_(-bound, bound))
        use_bias = projection == "softmax"
        self.bias = nn.Parameter(torch.eye(c) * diagonal_init, requires_grad=use_bias)

    def forward(self, probs: Tensor, class_means: Tensor) -> Tensor:
        """(P, C) posteriors and (C, C) class means -> (P, C, C) row-stochastic matrices."""
        h = torch.einsum("pi,koi->pko", probs, self.weight_p) + torch.einsum("ki,koi->ko", class_means, self.weight_m)
        if self.projection == "softmax":
            return torch.softmax(h + self.bias, dim=-1)
        h = h.clamp(1e-5, 1 - 1e-5)
        return h / h.sum(dim=-1, keepdim=True)


def anchor_matrix(probs: Tensor, min_confidence: float = 0.0) -> tuple[Tensor, Tensor]:
    """Row c = the posterior at the point most confident for class c (the anchor-point estimate).

    Also returns which rows are trustworthy: a class absent from the batch (a missing tooth, a rare third
    molar) still has a "most confident" point, but its posterior belongs to another class, and copying it
    would teach the matrix that the class turns into its neighbour. Rows whose anchor confidence is below
    ``min_confidence`` are flagged False.
    """
    from geot.distributed import global_argmax_rows

    best, where = probs.max(dim=0)
    best, rows = global_argmax_rows(best, probs[where])  # over every process's points when distributed
    return rows, best >= min_confidence


def posterior_confusion(probs: Tensor, pseudo: Tensor, weight: Tensor | None = None,
                        min_mass: float = 10.0) -> tuple[Tensor, Tensor]:
    """Row a = how the pseudo labels fall for points the teacher believes are class a: P(label b | class a).

    Why not anchors: the pseudo label is the teacher's own argmax, so at the point where the teacher is most
    sure of a class the label is that class by construction, and the anchor estimate tends to the identity as
    the teacher grows confident, while its labels stay wrong where it is unsure. Reading the teacher's
    posterior q_i as the chance that point i is truly class a, ``sum_i q_ia [label_i = b]`` estimates the
    joint of true class and label; dividing by its row sum gives the transition row. Rows with less than
    ``min_mass`` points' worth of belief (a class absent from the batch) are flagged False.
    """
    from geot.distributed import all_reduce_sum

    c = probs.shape[1]
    q = probs if weight is None else probs * weight[:, None]
    joint = torch.zeros(c, c, dtype=probs.dtype, device=probs.device).index_add_(1, pseudo, q.T)
    joint = all_reduce_sum(joint)  # over every process's points when distributed
    mass = joint.sum(dim=1)
    return joint / mass.clamp(min=1e-12)[:, None], mass >= min_mass


class ClassLevelState(nn.Module):
    """Running class-level statistics kept as buffers, so they travel in checkpoints."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.register_buffer("transition", torch.eye(num_classes))   # EMA of anchor matrices
        self.register_buffer("class_means", torch.eye(num_classes))  # mean labelled posterior per class

    @torch.no_grad()
    def update_transition(self, anchor: Tensor, decay: float, reference_bug: bool = False,
                          rows: Tensor | None = None) -> None:
        """EMA step towards ``anchor``, for the ``rows`` given (all by default)."""
        updated = row_normalise(decay * self.transition + (1 - decay) * anchor, reference_bug)
        if rows is None:
            self.transition.copy_(updated)
        else:
            self.transition[rows] = updated[rows]

    @torch.no_grad()
    def update_class_means(self, probs: Tensor, target: Tensor, decay: float, reference_bug: bool = False) -> None:
        """EMA of each class's mean posterior over labelled points of that class.

        ``reference_bug`` reproduces the public code's ``probs[target]``, which indexes points by label
        value: every row becomes the same mean over the first 17 points, each counted as often as its index
        occurs as a label.
        """
        c = self.class_means.shape[0]
        if reference_bug:
            means = probs[target].mean(0, keepdim=True).expand(c, -1)
            present = torch.ones(c, dtype=torch.bool, device=probs.device)
        else:
            from geot.distributed import all_reduce_sum

            sums = torch.zeros(c, c, dtype=probs.dtype, device=probs.device).index_add_(0, target, probs)
            sums = all_reduce_sum(sums)
            counts = all_reduce_sum(torch.bincount(target, minlength=c))
            present = counts > 0
            means = sums / counts.clamp(min=1)[:, None]
        self.class_means[present] = decay * self.class_means[present] + (1 - decay) * means[present]
