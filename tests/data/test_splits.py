import pytest

from geot.data.splits import split_patients


def scans(n_patients: int):
    return [(f"P{i:03d}_{jaw}", f"P{i:03d}") for i in range(n_patients) for jaw in ("lower", "upper")]


def test_split_groups_patients_and_is_seeded():
    s = split_patients(scans(60), 0.2, 0.2, seed=3)
    parts = [set(n.split("_")[0] for n in getattr(s, k)) for k in ("labelled", "unlabelled", "val")]
    assert len(parts[2]) == 12 and len(parts[0]) == round(0.2 * 48) and len(parts[1]) == 48 - 10
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert len(s.labelled) + len(s.unlabelled) + len(s.val) == 120
    assert s == split_patients(list(reversed(scans(60))), 0.2, 0.2, seed=3)
    assert s != split_patients(scans(60), 0.2, 0.2, seed=4)


def test_split_edges():
    s = split_patients(scans(3), 0.01, 0.2, seed=0)
    assert len(s.labelled) == 2 and len(s.val) == 2  # at least one patient each
    full = split_patients(scans(5), 1.0, 0.0)
    assert not full.unlabelled and not full.val
    with pytest.raises(ValueError):
        split_patients(scans(5), 0.0)
