import json

import pytest

from geot.data.sources import read_split
from geot.data.splits import PARTS, Split, split_patients
from geot.errors import GeotError


def scans(n_patients: int, start: int = 0):
    return [(f"P{i:03d}_{jaw}", f"P{i:03d}") for i in range(start, start + n_patients) for jaw in ("lower", "upper")]


def patients(split: Split, part: str) -> set[str]:
    return {n.split("_")[0] for n in getattr(split, part)}


def test_split_groups_patients_and_is_seeded():
    s = split_patients(scans(60), 0.2, 0.1, seed=3, test_fraction=0.2)
    parts = {k: patients(s, k) for k in PARTS}
    assert len(parts["test"]) == 12 and len(parts["val"]) == 6
    assert len(parts["labelled"]) == round(0.2 * 42) and len(parts["unlabelled"]) == 42 - 8
    for a in PARTS:  # no patient in two parts, and every scan somewhere
        for b in PARTS:
            assert a == b or not parts[a] & parts[b], (a, b)
    assert sum(len(v) for v in s.parts().values()) == 120 and not s.overlap()
    assert s == split_patients(list(reversed(scans(60))), 0.2, 0.1, seed=3, test_fraction=0.2)
    assert s != split_patients(scans(60), 0.2, 0.1, seed=4, test_fraction=0.2)


def test_test_part_is_stable_across_fractions_and_seeds():
    reference = split_patients(scans(60), 0.2, 0.1, seed=0, test_fraction=0.2).test
    for fraction in (0.05, 0.1, 0.5, 1.0):
        for seed in (0, 1, 7):
            for val in (0.0, 0.1, 0.2):
                assert split_patients(scans(60), fraction, val, seed=seed, test_fraction=0.2).test == reference
    assert split_patients(scans(60), 0.2, 0.1, test_fraction=0.2, test_seed=1).test != reference
    # twenty more patients: most of the old test patients stay in the test part (a hash draw, not a shuffle)
    grown = split_patients(scans(80), 0.2, 0.1, test_fraction=0.2)
    assert len({n.split("_")[0] for n in reference} & patients(grown, "test")) >= 9


def test_split_edges():
    s = split_patients(scans(3), 0.01, 0.2, seed=0)
    assert len(s.labelled) == 2 and len(s.val) == 2 and not s.test  # at least one patient each
    s = split_patients(scans(3), 0.5, 0.2, test_fraction=0.2)
    assert len(s.test) == 2 and len(s.val) == 2 and len(s.labelled) == 2  # one patient each, one trains
    full = split_patients(scans(5), 1.0, 0.0)
    assert not full.unlabelled and not full.val and not full.test
    with pytest.raises(ValueError):
        split_patients(scans(5), 0.0)
    with pytest.raises(ValueError, match="no patient to train"):
        split_patients(scans(5), 0.5, 0.5, test_fraction=0.5)


def test_split_file_round_trip_and_overlap(tmp_path):
    s = split_patients(scans(10), 0.5, 0.1, test_fraction=0.2)
    path = tmp_path / "split.json"
    path.write_text(json.dumps(s.model_dump()))
    assert read_split(path) == s
    bad = s.model_dump()
    bad["test"].append(bad["labelled"][0])
    path.write_text(json.dumps(bad))
    with pytest.raises(GeotError, match="more than one part"):
        read_split(path)
    path.write_text('{"labelled": 3}')
    with pytest.raises(GeotError, match="not a split file"):
        read_split(path)
    old = {k: v for k, v in s.model_dump().items() if k != "test"}  # split files from before the test part
    path.write_text(json.dumps(old))
    assert read_split(path).test == []
