"""instance_quality counts exactly what its docstring says."""

from __future__ import annotations

import numpy as np
import pytest

from geot.decode import instance_quality


def test_counts_on_a_hand_made_scan() -> None:
    #        gingiva | tooth 1 (10) | tooth 2 (10) | tooth 3 (10) | tooth 4 (10)
    true = np.r_[[0] * 10, [1] * 10, [2] * 10, [3] * 10, [4] * 10]
    pred = np.r_[[0] * 8, [9] * 2,                 # two gingiva vertices in a spurious instance 9
                 [1] * 10,                         # tooth 1 matched
                 [2] * 5, [3] * 5,                 # tooth 2 split in two halves (IoU 0.5: not matched) ...
                 [3] * 5, [3] * 5,                 # ... its second half merged with tooth 3 (IoU 2/3)
                 [0] * 9, [4] * 1]                 # tooth 4 mostly gingiva: missed
    q = instance_quality(pred, true)
    assert q == {"true_teeth": 4, "pred_instances": 5, "matched": 2, "split": 1, "merged": 2, "missed": 1,
                 "spurious": 1}


def test_perfect_and_empty() -> None:
    true = np.array([0, 1, 1, 2, 2, 0])
    assert instance_quality(true * 7, true) == {"true_teeth": 2, "pred_instances": 2, "matched": 2, "split": 0,
                                                 "merged": 0, "missed": 0, "spurious": 0}
    none = instance_quality(np.zeros(6, int), true)
    assert none["missed"] == 2 and none["matched"] == 0 and none["pred_instances"] == 0
    with pytest.raises(ValueError, match="predicted instance ids"):
        instance_quality(np.zeros(5, int), true)
