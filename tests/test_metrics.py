"""Metric values checked against hand computations and against a naive re-statement of the evaluator."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from geot.metrics import aggregate_rows, challenge_metrics, challenge_score, nanmean, segmentation_metrics

# An octahedron of radius 1: centroid at the origin and evaluator size s = sqrt(sum((c - P)^2, axis=0))
# = sqrt((2, 2, 2)), so ||s|| = sqrt(6).
OCTA = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float64)


def jaw_scene(codes=(31, 32, 33, 34), spacing=4.0, n_gingiva=12):
    """Teeth as unit octahedra along x (one FDI code and instance each), then gingiva points off the arch."""
    verts, labels, inst = [], [], []
    for i, code in enumerate(codes):
        verts.append(OCTA + [i * spacing, 0.0, 0.0])
        labels += [code] * len(OCTA)
        inst += [i + 1] * len(OCTA)
    verts.append(np.column_stack([np.linspace(0, spacing * len(codes), n_gingiva), np.full(n_gingiva, -6.0),
                                  np.zeros(n_gingiva)]))
    labels += [0] * n_gingiva
    inst += [0] * n_gingiva
    return np.concatenate(verts), np.array(labels), np.array(inst)


# --------------------------------------------------------------------------------------------------
# segmentation_metrics
# --------------------------------------------------------------------------------------------------

def test_perfect_segmentation_scores_one():
    gt = np.array([0, 0, 1, 1, 2, 2, 16, 16, 0])
    m = segmentation_metrics(gt.copy(), gt)
    assert m["miou"] == 1.0 and m["dice"] == 1.0 and m["accuracy"] == 1.0 and m["gingiva_iou"] == 1.0
    assert len(m["per_class_iou"]) == 17
    assert [k for k, v in enumerate(m["per_class_iou"]) if not math.isnan(v)] == [0, 1, 2, 16]


def test_hand_made_iou_values():
    # vertex:   0  1  2  3  4  5  6  7
    gt = np.array([0, 0, 1, 1, 1, 2, 2, 0])
    pred = np.array([0, 1, 1, 1, 2, 2, 2, 0])
    # class 0: GT {0,1,7}, pred {0,7}       -> inter 2, union 3 -> IoU 2/3, Dice 2*2/(3+2) = 0.8
    # class 1: GT {2,3,4}, pred {1,2,3}     -> inter 2, union 4 -> IoU 1/2, Dice 2*2/(3+3) = 2/3
    # class 2: GT {5,6},   pred {4,5,6}     -> inter 2, union 3 -> IoU 2/3, Dice 2*2/(2+3) = 0.8
    # tooth mIoU = (1/2 + 2/3) / 2 = 7/12; Dice = (2/3 + 0.8) / 2 = 11/15; accuracy = 6/8 (wrong: 1, 4)
    m = segmentation_metrics(pred, gt, num_classes=3)
    assert m["per_class_iou"] == pytest.approx([2 / 3, 1 / 2, 2 / 3])
    assert m["per_class_dice"] == pytest.approx([0.8, 2 / 3, 0.8])
    assert m["miou"] == pytest.approx(7 / 12)
    assert m["dice"] == pytest.approx(11 / 15)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["gingiva_iou"] == pytest.approx(2 / 3)


def test_class_predicted_but_absent_from_gt_does_not_lower_miou():
    gt = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    pred = np.array([0, 0, 5, 5, 1, 1, 1, 1])  # two gingiva vertices called class 5, absent from GT
    m = segmentation_metrics(pred, gt)
    assert m["miou"] == 1.0 and m["dice"] == 1.0  # counting class 5 (IoU 0) would give 0.5
    assert math.isnan(m["per_class_iou"][5])
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["gingiva_iou"] == pytest.approx(2 / 4)


def test_false_positives_still_lower_the_true_class():
    gt = np.array([0, 0, 1, 1])
    pred = np.array([0, 1, 1, 1])  # class 1: inter 2, union 3
    assert segmentation_metrics(pred, gt)["miou"] == pytest.approx(2 / 3)


def test_dice_is_2iou_over_1_plus_iou_per_class():
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 17, 2000)
    pred = np.where(rng.random(2000) < 0.6, gt, rng.integers(0, 17, 2000))
    m = segmentation_metrics(pred, gt)
    iou, dice = np.array(m["per_class_iou"]), np.array(m["per_class_dice"])
    assert np.all(np.isfinite(iou)) and np.all(iou < 1)
    np.testing.assert_allclose(dice, 2 * iou / (1 + iou), rtol=1e-12)
    assert m["dice"] == pytest.approx(np.mean(2 * iou[1:] / (1 + iou[1:])))


def test_no_teeth_in_gt_gives_nan_miou_but_real_accuracy():
    m = segmentation_metrics(np.array([0, 3, 0]), np.array([0, 0, 0]))
    assert math.isnan(m["miou"]) and math.isnan(m["dice"])
    assert m["accuracy"] == pytest.approx(2 / 3)


def test_out_of_range_prediction_counts_as_wrong_and_bad_gt_raises():
    m = segmentation_metrics(np.array([0, -1, 1, 99]), np.array([0, 1, 1, 1]), num_classes=3)
    assert m["per_class_iou"][1] == pytest.approx(1 / 3)
    assert m["accuracy"] == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="ground-truth classes"):
        segmentation_metrics(np.array([0, 1]), np.array([0, 17]))
    with pytest.raises(ValueError, match="values"):
        segmentation_metrics(np.array([0, 1, 1]), np.array([0, 1]))


# --------------------------------------------------------------------------------------------------
# challenge_metrics
# --------------------------------------------------------------------------------------------------

def test_perfect_prediction_scores_one_with_arbitrary_instance_ids():
    v, lab, inst = jaw_scene()
    pred_inst = np.where(inst > 0, 100 - 7 * inst, 0)  # ids are arbitrary per scan
    m = challenge_metrics(v, lab, inst, lab.copy(), pred_inst)
    assert m["tsa"] == 1.0 and m["tla"] == 0.0 and m["exp_neg_tla"] == 1.0 and m["tir"] == 1.0
    assert (m["n_gt_teeth"], m["n_pred_teeth"], m["n_matched"]) == (4, 4, 4)
    assert challenge_score(m["tsa"], m["tla"], m["tir"]) == 1.0


def test_inputs_are_not_modified():
    v, lab, inst = jaw_scene()
    pred_lab, pred_inst = lab.copy(), inst.copy()
    pred_lab[inst == 1] = [31, 32, 31, 32, 31, 32]  # ambiguous instance: the evaluator zeroes it
    before = pred_lab.copy()
    challenge_metrics(v, lab, inst, pred_lab, pred_inst)
    assert np.array_equal(pred_lab, before) and np.array_equal(pred_inst, inst)


def test_unmatched_gt_tooth_adds_unnormalised_five_times_size():
    v, lab, inst = jaw_scene()  # 4 GT teeth
    pred_lab, pred_inst = lab.copy(), inst.copy()
    pred_lab[inst == 4] = 0
    pred_inst[inst == 4] = 0  # tooth 34 not predicted: only 3 predictions for 4 GT teeth
    m = challenge_metrics(v, lab, inst, pred_lab, pred_inst)
    # matched teeth contribute 0; the miss adds 5 * ||s|| = 5 * sqrt(6) (not divided by s), over 4 teeth
    assert m["tla"] == pytest.approx(5 * math.sqrt(6) / 4)
    assert m["exp_neg_tla"] == pytest.approx(math.exp(-5 * math.sqrt(6) / 4))
    assert m["tir"] == 1.0  # denominator: the 3 matched pairs, not the 4 GT teeth
    assert m["tsa"] == pytest.approx(1 - 6 / len(v))


def test_matched_distance_is_divided_elementwise_by_size():
    v, lab, inst = jaw_scene(codes=(31,))
    # Predicted centroids are means of GT mesh vertices, so move the prediction by dropping a vertex:
    # tooth 31 predicted without vertex 5 = (0, 0, -1) -> centroid (0, 0, 0.2).
    pred_inst, pred_lab = inst.copy(), lab.copy()
    pred_inst[5] = pred_lab[5] = 0
    m = challenge_metrics(v, lab, inst, pred_lab, pred_inst)
    # ||(0, 0, 0.2) / (sqrt2, sqrt2, sqrt2)|| = 0.2 / sqrt(2) ~ 0.141 (and < 0.5, same label -> TIR hit)
    assert m["tla"] == pytest.approx(0.2 / math.sqrt(2))
    assert m["tir"] == 1.0
    assert m["tsa"] == pytest.approx(1 - 1 / len(v))


def test_instance_with_two_labels_is_zeroed():
    v, lab, inst = jaw_scene()
    pred_lab, pred_inst = lab.copy(), inst.copy()
    pred_lab[np.flatnonzero(inst == 2)[:2]] = 33  # instance 2 now carries {32, 33}
    m = challenge_metrics(v, lab, inst, pred_lab, pred_inst)
    assert m["n_pred_teeth"] == 3
    assert m["tsa"] == pytest.approx(1 - 6 / len(v))  # its 6 vertices became gingiva
    assert m["tla"] == pytest.approx(5 * math.sqrt(6) / 4)  # GT tooth 32 is now unmatched
    assert m["tir"] == 1.0


def test_gt_instance_with_two_labels_takes_its_most_frequent():
    v, lab, inst = jaw_scene(codes=(31, 32))
    gt_lab = lab.copy()
    gt_lab[np.flatnonzero(inst == 1)[:2]] = 41  # GT tooth 1: four vertices say 31, two say 41
    assert challenge_metrics(v, gt_lab, inst, lab, inst)["tir"] == 1.0
    pred_lab = np.where(inst == 1, 41, lab)
    assert challenge_metrics(v, gt_lab, inst, pred_lab, inst)["tir"] == pytest.approx(1 / 2)


def test_wrong_fdi_is_a_tir_miss_but_not_a_localisation_error():
    v, lab, inst = jaw_scene()
    pred_lab = lab.copy()
    pred_lab[inst == 3] = 35  # tooth 33 called 35, in the right place
    m = challenge_metrics(v, lab, inst, pred_lab, inst)
    assert m["tsa"] == 1.0 and m["tla"] == 0.0
    assert m["tir"] == pytest.approx(3 / 4)


def test_swapping_two_tooth_labels_keeps_tsa_but_drops_tir_and_miou():
    v, lab, inst = jaw_scene(codes=(31, 32, 33, 34))
    pred_lab = lab.copy()
    pred_lab[lab == 31], pred_lab[lab == 32] = 32, 31
    m = challenge_metrics(v, lab, inst, pred_lab, inst)
    assert m["tsa"] == 1.0 and m["tla"] == 0.0
    assert m["tir"] == pytest.approx(2 / 4)
    classes = {0: 0, 31: 1, 32: 2, 33: 3, 34: 4}
    to_cls = np.vectorize(classes.get)
    seg = segmentation_metrics(to_cls(pred_lab), to_cls(lab))
    assert seg["miou"] == pytest.approx(2 / 4)  # classes 1 and 2 have IoU 0, classes 3 and 4 IoU 1
    assert seg["per_class_iou"][1] == 0.0 and seg["per_class_iou"][2] == 0.0


def test_tsa_is_micro_f1_over_both_classes_not_binary_tooth_f1():
    v = np.random.default_rng(0).normal(size=(10, 3))
    gt_inst = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    pred_inst = np.array([1, 1, 2, 2, 0, 0, 0, 0, 0, 0])  # 2 extra tooth vertices
    gt_lab, pred_lab = np.where(gt_inst > 0, 31, 0), np.where(pred_inst > 0, 31, 0)
    m = challenge_metrics(v, gt_lab, gt_inst, pred_lab, pred_inst)
    # micro F1 over {gingiva, tooth} = 8 right of 10 = 0.8; the tooth-class F1 would be 2*2/(4+2) = 0.667
    assert m["tsa"] == pytest.approx(0.8)


def test_no_predicted_teeth_and_no_gt_teeth_do_not_crash():
    v, lab, inst = jaw_scene(codes=(31, 32))
    zeros = np.zeros_like(lab)
    m = challenge_metrics(v, lab, inst, zeros, zeros)
    assert m["tla"] == pytest.approx(5 * math.sqrt(6))  # every tooth missed: mean of 5*||s||
    assert m["tir"] == 0.0 and m["n_matched"] == 0
    assert m["tsa"] == pytest.approx(1 - 12 / len(v))
    m = challenge_metrics(v, zeros, zeros, lab, inst)
    assert math.isnan(m["tla"]) and math.isnan(m["exp_neg_tla"]) and math.isnan(m["tir"])
    assert m["tsa"] == pytest.approx(1 - 12 / len(v))
    with pytest.raises(ValueError, match="pred_fdi"):
        challenge_metrics(v, lab, inst, lab[:-1], inst)


def test_more_predictions_than_gt_teeth_match_the_nearest():
    v, lab, inst = jaw_scene(codes=(31, 32, 33))
    gt_inst = np.where(inst == 3, 0, inst)  # GT has teeth 31 and 32 only
    gt_lab = np.where(inst == 3, 0, lab)
    m = challenge_metrics(v, gt_lab, gt_inst, lab, inst)
    assert m["n_matched"] == 2 and m["tla"] == 0.0 and m["tir"] == 1.0
    assert m["tsa"] == pytest.approx(1 - 6 / len(v))


def _naive_evaluator(v, gt_lab, gt_inst, pred_lab, pred_inst):
    """The evaluator's steps written out loop by loop (a second statement of anchors.md B)."""
    pred_lab, pred_inst = pred_lab.copy(), pred_inst.copy()
    preds = {}
    for i in np.unique(pred_inst[pred_inst != 0]):
        mask = pred_inst == i
        if len(np.unique(pred_lab[mask])) == 1:
            preds[i] = (pred_lab[mask][0], v[mask].mean(0))
        else:
            pred_lab[mask] = 0
            pred_inst[mask] = 0
    gts = {}
    for i in np.unique(gt_inst[gt_inst != 0]):
        mask = gt_inst == i
        c = v[mask].mean(0)
        gts[i] = (gt_lab[mask][0], c, np.sqrt(((c - v[mask]) ** 2).sum(0)))
    gk, pk = list(gts), list(preds)
    cost = np.array([[np.linalg.norm(gts[g][1] - preds[p][1]) for p in pk] for g in gk])
    r, c = linear_sum_assignment(cost)
    match = {gk[a]: pk[b] for a, b in zip(r, c, strict=True)}
    tla = 0.0
    tir = 0
    for g, (label, cent, size) in gts.items():
        if g in match:
            d = np.linalg.norm((cent - preds[match[g]][1]) / size)
            tla += d
            tir += int(d < 0.5 and label == preds[match[g]][0])
        else:
            tla += 5 * np.linalg.norm(size)
    tsa = np.mean((gt_inst != 0) == (pred_inst != 0))
    return tsa, tla / len(gts), tir / len(match)


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_naive_evaluator_on_random_scans(seed):
    rng = np.random.default_rng(seed)
    n_teeth = 8
    codes = rng.choice([31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 47], n_teeth, replace=False)
    v = rng.normal(size=(600, 3)) * 0.8
    gt_inst = rng.integers(0, n_teeth + 1, 600)
    v += np.column_stack([gt_inst * 3.0, np.zeros(600), np.zeros(600)])
    gt_lab = np.where(gt_inst > 0, codes[np.maximum(gt_inst - 1, 0)], 0)
    # prediction: new instance ids, two labels swapped, 5 % of vertices moved to other instances,
    # one tooth dropped and one made ambiguous (two labels)
    ids = np.r_[0, rng.permutation(n_teeth) * 7 + 5]
    pred_codes = np.r_[0, codes]
    a, b = rng.choice(np.arange(1, n_teeth + 1), 2, replace=False)
    pred_codes[[a, b]] = pred_codes[[b, a]]
    src = gt_inst.copy()
    flip = rng.random(600) < 0.05
    src[flip] = rng.integers(0, n_teeth + 1, flip.sum())
    src[src == 1] = 0  # tooth 1 dropped
    pred_inst, pred_lab = ids[src], pred_codes[src]
    ambiguous = np.flatnonzero(src == 2)[::2]
    pred_lab[ambiguous] = 99 if pred_lab[ambiguous[0]] != 99 else 98
    m = challenge_metrics(v, gt_lab, gt_inst, pred_lab, pred_inst)
    tsa, tla, tir = _naive_evaluator(v, gt_lab, gt_inst, pred_lab, pred_inst)
    assert m["tsa"] == pytest.approx(tsa)
    assert m["tla"] == pytest.approx(tla)
    assert m["tir"] == pytest.approx(tir)
    assert m["n_pred_teeth"] == n_teeth - 2  # one dropped, one zeroed as ambiguous
    assert 0 < m["tir"] < 1 and m["tla"] > 0


# --------------------------------------------------------------------------------------------------
# scores and means
# --------------------------------------------------------------------------------------------------

def test_challenge_score():
    assert challenge_score(0.9, 0.0, 0.6) == pytest.approx((0.9 + 1.0 + 0.6) / 3)
    assert challenge_score(1.0, math.log(2), 1.0) == pytest.approx((1 + 0.5 + 1) / 3)


def test_aggregate_rows_per_jaw_ignores_nan():
    rows = [
        {"jaw": "lower", "miou": 0.8, "tsa": 1.0, "exp_neg_tla": 0.5, "tir": 1.0, "iou_3": 0.5},
        {"jaw": "lower", "miou": math.nan, "tsa": 0.0, "exp_neg_tla": 0.0, "tir": 0.0, "iou_3": math.nan},
        {"jaw": "upper", "miou": 0.4, "tsa": 0.5, "exp_neg_tla": 1.0, "tir": 0.5},
    ]
    agg = aggregate_rows(rows)
    assert set(agg) == {"overall", "lower", "upper"}
    assert agg["overall"]["n"] == 3 and agg["lower"]["n"] == 2 and agg["upper"]["n"] == 1
    assert agg["overall"]["miou"] == pytest.approx(0.6)
    assert agg["lower"]["miou"] == pytest.approx(0.8)
    assert agg["lower"]["tsa"] == pytest.approx(0.5)
    assert agg["overall"]["iou_3"] == pytest.approx(0.5)
    assert math.isnan(agg["upper"]["iou_3"]) and math.isnan(agg["overall"]["dice"])
    # score = mean of the three means: (0.5 + 0.5 + 0.5) / 3 for the overall group
    assert agg["overall"]["score"] == pytest.approx((0.5 + 0.5 + 0.5) / 3)
    assert agg["upper"]["score"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)


def test_nanmean_skips_nan_and_none():
    assert nanmean([1.0, None, math.nan, 3.0]) == 2.0
    assert math.isnan(nanmean([math.nan, None]))


def test_dentition_errors_count_shared_codes_and_lost_teeth():
    from geot.metrics import dentition_errors

    gt_fdi = np.array([0, 0, 31, 31, 32, 32, 33, 33, 34, 34])
    gt_inst = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    exact = dentition_errors(gt_fdi, gt_inst, gt_fdi)
    assert exact == {"duplicated_codes": 0, "missing_teeth": 0}
    shifted = np.array([0, 0, 31, 31, 31, 31, 0, 0, 33, 34])  # 31 on two teeth, 33 not found, 34 split
    assert dentition_errors(gt_fdi, gt_inst, shifted) == {"duplicated_codes": 1, "missing_teeth": 1}
