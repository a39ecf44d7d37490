"""The graph cut minimises the energy it exposes, and leaves alone what needs no fixing."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import identity

from geot.decode.graph import (
    adjacency,
    concavity,
    cut_weights,
    knn_edges,
    mesh_edges,
    supervertices,
    unit_normals,
    vertex_graph,
)
from geot.decode.graphcut import expand, graph_cut, posterior_costs, potts_energy
from tests.decode.conftest import make_jaw


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cloud", [False, True])
def test_cut_never_raises_the_energy_and_cleans_noise(seed: int, cloud: bool) -> None:
    jaw = make_jaw("lower", 1)
    faces = None if cloud else jaw.faces
    edges = vertex_graph(jaw.points, faces)
    weights = cut_weights(jaw.points, unit_normals(jaw.points, faces), edges, groove=20.0)
    probs = jaw.posteriors(seed, noise=4.0)
    labels, energy = graph_cut(probs, edges, weights, smoothness=4.0)
    argmax = probs.argmax(axis=1)
    assert energy(labels) <= energy(argmax)
    assert energy(labels) < 0.9 * energy(argmax)  # noisy posteriors leave much to gain
    assert (labels == jaw.classes).mean() > (argmax == jaw.classes).mean() + 0.05


def test_cut_on_patches_of_a_large_mesh() -> None:
    jaw = make_jaw("lower", 1)
    edges = vertex_graph(jaw.points, jaw.faces)
    weights = cut_weights(jaw.points, jaw.normals, edges, groove=20.0)
    groups = supervertices(jaw.points, edges, max_groups=len(jaw.points) // 4)
    assert groups is not None and len(jaw.points) // 8 < groups.max() + 1 <= len(jaw.points) // 2
    _, same = np.unique(np.c_[groups, jaw.classes], axis=0, return_inverse=True)
    assert len(np.unique(same)) < 1.3 * (groups.max() + 1)           # patches rarely straddle two teeth
    probs = jaw.posteriors(0, noise=4.0)
    labels, energy = graph_cut(probs, edges, weights, smoothness=4.0, groups=groups)
    argmax = probs.argmax(axis=1)
    assert energy(labels) <= energy(argmax)
    assert (labels == jaw.classes).mean() > (argmax == jaw.classes).mean() + 0.05
    assert supervertices(jaw.points, edges, max_groups=len(jaw.points)) is None


def smooth(labels: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Labels where every vertex agrees with the most common label of its neighbourhood (itself included)."""
    n = len(labels)
    adj = adjacency(edges, n) + identity(n)
    for _ in range(20):
        votes = (adj @ np.eye(17)[labels]) + 0.1 * np.eye(17)[labels]   # ties keep the vertex's own label
        new = votes.argmax(axis=1)
        if (new == labels).all():
            return labels
        labels = new
    raise AssertionError("majority filter did not settle")


def test_confident_smooth_prediction_is_left_unchanged() -> None:
    jaw = make_jaw("upper", 2)
    edges = vertex_graph(jaw.points, jaw.faces)
    weights = cut_weights(jaw.points, jaw.normals, edges, groove=20.0)
    truth = smooth(jaw.classes, edges)     # each label is the commonest in its closed neighbourhood
    probs = np.full((len(truth), 17), 0.001 / 16)
    probs[np.arange(len(probs)), truth] = 0.999
    labels, _ = graph_cut(probs, edges, weights, smoothness=4.0)
    np.testing.assert_array_equal(labels, truth)


def test_energy_counts_data_and_cut_edges() -> None:
    costs = np.array([[0.0, 1.0], [1.0, 0.0], [0.25, 0.5]])
    edges = np.array([[0, 1], [1, 2]])
    energy = potts_energy(costs, edges, np.array([1.0, 0.5]), smoothness=2.0, scale=1000)
    assert energy(np.array([0, 1, 1])) == pytest.approx(0.0 + 0.0 + 0.5 + 2.0)
    assert energy(np.array([0, 0, 0])) == pytest.approx(0.0 + 1.0 + 0.25)
    assert list(expand(energy, np.array([0, 1, 1]))) == [0, 0, 0]


def test_rounding_keeps_near_ties_with_the_argmax() -> None:
    # two labels a hair apart, below the 1/scale rounding step: the cut must not flip to the other one
    probs = np.array([[0.5 + 1e-9, 0.5 - 1e-9], [0.5 - 1e-9, 0.5 + 1e-9]] * 3)
    edges = np.zeros((0, 2), dtype=np.int64)
    labels, _ = graph_cut(probs, edges, np.zeros(0), smoothness=1.0)
    np.testing.assert_array_equal(labels, probs.argmax(axis=1))
    # with edges, a tie in rounded costs is no reason to move: the initial labels stay
    edges = np.array([[0, 1], [2, 3], [4, 5]])
    labels, energy = graph_cut(probs, edges, np.full(3, 1e-6), smoothness=1.0)
    np.testing.assert_array_equal(labels, probs.argmax(axis=1))


def test_posterior_costs_floor_zero_posteriors() -> None:
    costs = posterior_costs(np.array([[1.0, 0.0]]), floor=1e-6)
    assert costs[0, 0] == 0.0 and costs[0, 1] == pytest.approx(-np.log(1e-6))


def test_cuts_are_cheap_in_grooves() -> None:
    # a V-shaped groove along x = 0 (surface z = |x|, normals facing +z): edges across it fold inwards
    xs = np.linspace(-1, 1, 21)
    grid = np.stack(np.meshgrid(xs, xs, indexing="ij"), axis=-1).reshape(-1, 2)
    points = np.c_[grid, np.abs(grid[:, 0])]
    normals = np.c_[-np.sign(grid[:, 0]), np.zeros(len(grid)), np.ones(len(grid))] / np.sqrt(2)
    normals[grid[:, 0] == 0] = [0, 0, 1]
    edges = knn_edges(points, 4)
    bend = concavity(points, normals, edges)
    across = np.sign(points[edges[:, 0], 0]) != np.sign(points[edges[:, 1], 0])
    assert bend[across].min() > 0 and np.all(bend[~across & (points[edges[:, 0], 0] != 0)] == 0)
    w = cut_weights(points, normals, edges, groove=1.0)
    assert w[across].max() < 1.0 and np.all(w[~across & (points[edges[:, 0], 0] != 0)] == 1.0)


def test_mesh_and_knn_edges_are_unique_and_ordered() -> None:
    faces = np.array([[0, 1, 2], [2, 1, 3]])
    np.testing.assert_array_equal(mesh_edges(faces, 4), [[0, 1], [0, 2], [1, 2], [1, 3], [2, 3]])
    edges = knn_edges(np.random.default_rng(0).normal(size=(50, 3)), 5)
    assert (edges[:, 0] < edges[:, 1]).all() and len(np.unique(edges, axis=0)) == len(edges)
    assert len(knn_edges(np.zeros((1, 3)), 5)) == 0
