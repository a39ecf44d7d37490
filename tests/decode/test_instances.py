"""Instances: one vote pile, one tooth; small pieces join their neighbours."""

from __future__ import annotations

import numpy as np

from geot.decode.graph import knn_edges
from geot.decode.instances import absorb, code_pieces, drop_small_modes, one_piece_each, vote_modes


def piles(centres: np.ndarray, spread: float, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([c + rng.normal(0, spread, (n, 3)) for c in centres])


def test_one_peak_per_pile_even_when_piles_touch() -> None:
    # a row of teeth one width apart, votes spread as after the decoder's smoothing of 0.5-width noise
    centres = np.c_[np.arange(6) * 0.19, np.zeros(6), np.zeros(6)]
    votes = piles(centres, spread=0.15 * 0.19, n=300)
    modes = vote_modes(votes, radius=0.25 * 0.19, separation=0.3 * 0.19)
    assert len(modes) == 6
    assert np.abs(np.sort(modes[:, 0]) - centres[:, 0]).max() < 0.3 * 0.19


def test_stray_votes_make_no_peak() -> None:
    centres = np.array([[0.0, 0, 0], [0.2, 0, 0]])
    votes = np.concatenate([piles(centres, 0.02, 200), np.random.default_rng(1).uniform(-1, 1, (20, 3))])
    modes = drop_small_modes(votes, vote_modes(votes, 0.05, 0.06), min_share=0.25)
    assert len(modes) == 2


def test_small_pieces_join_their_neighbours() -> None:
    # a path 0-1-2-...-9: label 1 on 0..4, label 2 on 5..9, but vertex 2 says 2 (a stray fragment)
    edges = np.c_[np.arange(9), np.arange(1, 10)]
    labels = np.array([1, 1, 2, 1, 1, 2, 2, 2, 2, 2])
    np.testing.assert_array_equal(one_piece_each(labels, edges), [1, 1, 1, 1, 1, 2, 2, 2, 2, 2])
    np.testing.assert_array_equal(absorb(labels, labels != 2, edges)[:5], [1, 1, 1, 1, 1])


def test_code_pieces_split_a_code_found_twice() -> None:
    points = np.c_[np.arange(30) * 0.01, np.zeros(30), np.zeros(30)]
    classes = np.r_[[3] * 10, [0] * 10, [3] * 9, [5]]          # code 3 on two separate stretches, a crumb of 5
    pieces = code_pieces(classes, knn_edges(points, 2), min_share=0.25)
    assert len(np.unique(pieces[pieces > 0])) == 2 and (pieces[classes == 0] == 0).all()
    assert pieces[-1] == pieces[-2]                                 # the crumb joined its neighbour
