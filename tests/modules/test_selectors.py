"""AGCD selection extended with the expected Loki cost as the certainty of a scan."""

from __future__ import annotations

import pytest
import torch

from geot.modules.metric import tooth_metric
from geot.modules.selectors.agcd import AdaptiveMarginSelector, scan_loki_certainty, scan_margin


def two_way(a: int, b: int, n: int = 50, share: float = 0.6) -> torch.Tensor:
    p = torch.zeros(n, 17)
    p[:, a], p[:, b] = share, 1 - share
    return p


def test_loki_certainty_separates_what_the_margin_cannot():
    near, far = two_way(3, 4), two_way(3, 9)  # neighbours vs teeth on opposite sides of the arch
    assert scan_margin(near) == pytest.approx(scan_margin(far).item())
    d = torch.as_tensor(tooth_metric(), dtype=torch.float32)
    assert scan_loki_certainty(near, d) > scan_loki_certainty(far, d)
    expected = -(0.4 * d[3, 4] ** 2)  # the Fréchet mean is 3, the cost the 0.4 on its neighbour
    assert scan_loki_certainty(near, d).item() == pytest.approx(expected.item())
    sure = torch.nn.functional.one_hot(torch.full((50,), 5), 17).float()
    assert scan_loki_certainty(sure, d).item() == 0


def test_loki_score_follows_the_round_schedule():
    near, far = two_way(3, 4), two_way(3, 9)
    early = AdaptiveMarginSelector(round=0, score="loki")([near, far])
    late = AdaptiveMarginSelector(round=3, score="loki")([near, far])
    assert early.argmax() == 0 and late.argmax() == 1
    margin_late = AdaptiveMarginSelector(round=3)([near, far])
    assert margin_late[0] == margin_late[1]
    with pytest.raises(ValueError):
        AdaptiveMarginSelector(score="entropy")
