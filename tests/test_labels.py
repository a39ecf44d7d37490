import numpy as np
import pytest

from geot import labels


@pytest.mark.parametrize("jaw", labels.JAWS)
def test_fdi_class_round_trip(jaw):
    codes = labels.fdi_codes(jaw)
    assert len(codes) == labels.NUM_CLASSES and codes[0] == 0
    classes = labels.fdi_to_class(codes, jaw)
    np.testing.assert_array_equal(classes, np.arange(17))
    np.testing.assert_array_equal(labels.class_to_fdi(classes, jaw), codes)


def test_reference_scheme():
    # upper: 11..18 -> 1..8, 21..28 -> 9..16; lower: 31..38 -> 1..8, 41..48 -> 9..16
    np.testing.assert_array_equal(labels.fdi_to_class([11, 18, 21, 28, 0], "upper"), [1, 8, 9, 16, 0])
    np.testing.assert_array_equal(labels.fdi_to_class([31, 38, 41, 48], "lower"), [1, 8, 9, 16])


def test_unknown_and_foreign_codes_are_rejected():
    with pytest.raises(ValueError, match=r"\[55\]"):
        labels.fdi_to_class([0, 11, 55], "upper")
    with pytest.raises(ValueError, match="31"):
        labels.fdi_to_class([31], "upper")
    assert labels.unknown_fdi(np.array([0, 31, 19, -1, 100]), "lower") == [-1, 19, 100]
    with pytest.raises(ValueError):
        labels.class_to_fdi([17], "lower")
    with pytest.raises(ValueError, match="unknown jaw"):
        labels.fdi_codes("middle")


def test_jaw_of_fdi():
    assert labels.jaw_of_fdi([0, 11, 26]) == "upper"
    assert labels.jaw_of_fdi([0, 47]) == "lower"
    assert labels.jaw_of_fdi([0, 0]) is None
    with pytest.raises(ValueError, match="mix"):
        labels.jaw_of_fdi([11, 31])


def test_arch_order():
    pos = labels.ARCH_POSITION
    # the arch reads x8 .. x1 | y1 .. y8: classes 8..1 then 9..16 at positions 1..16
    assert [int(np.where(pos == p)[0][0]) for p in range(1, 17)] == [*range(8, 0, -1), *range(9, 17)]
    d = labels.arch_distance()
    assert d[1, 9] == 1  # central incisors of both quadrants are neighbours
    assert d[8, 16] == 15  # the two last molars are the arch's ends
    assert (d[0, 1:] > d[1:, 1:].max()).all()
    assert (d == d.T).all()


def test_palette_and_names():
    assert labels.PALETTE.shape == (17, 3)
    assert len({tuple(c) for c in labels.PALETTE}) == 17
    assert labels.class_names("lower")[6] == "36 first molar"


@pytest.mark.parametrize("given, jaw", [("lower", "lower"), ("Lower", "lower"), (" UPPER ", "upper"),
                                        ("uPpEr", "upper")])
def test_check_jaw_accepts_any_case(given, jaw):
    assert labels.check_jaw(given) == jaw
    np.testing.assert_array_equal(labels.fdi_to_class(labels.fdi_codes(jaw), given), np.arange(17))


@pytest.mark.parametrize("given", ["middle", "", "low", None, 3])
def test_check_jaw_refuses_what_names_no_jaw(given):
    with pytest.raises(ValueError, match="unknown jaw"):
        labels.check_jaw(given)
