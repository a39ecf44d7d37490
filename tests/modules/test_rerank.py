"""FuDD-style re-ranking of ambiguous points among their top-k classes."""

from __future__ import annotations

import torch

from geot.modules.metric import tooth_metric
from geot.modules.rules.fudd import AmbiguityTriggeredRerank, ambiguity_rerank

D = torch.as_tensor(tooth_metric(), dtype=torch.float32)


def test_confident_points_keep_argmax_and_output_stays_in_top_k():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(500, 17) * 2, 1)
    out = ambiguity_rerank(probs, D, delta=0.2, k=3)
    top2 = probs.topk(2, 1).values
    sure = top2[:, 0] - top2[:, 1] >= 0.2
    assert torch.equal(out[sure], probs.argmax(1)[sure])
    top3 = probs.topk(3, 1).indices
    assert (top3 == out[:, None]).any(1).all()
    assert (out[~sure] != probs.argmax(1)[~sure]).any()  # some ambiguous points do change


def test_middle_tooth_only_when_it_is_a_candidate():
    p = torch.zeros(2, 17)
    p[0, [3, 4, 5]] = torch.tensor([0.38, 0.24, 0.38])  # 4 sits between 3 and 5 and is a candidate
    p[1, [3, 5, 0]] = torch.tensor([0.38, 0.37, 0.25])  # the middle tooth is not among the top 3
    out = AmbiguityTriggeredRerank(k=3)(p)
    assert out.tolist() == [4, 3]
    wide = AmbiguityTriggeredRerank(delta=0.0)(p)  # nothing counts as ambiguous: argmax
    assert torch.equal(wide, p.argmax(1))
