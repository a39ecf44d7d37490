"""On real jaws (../shared/data): simulated network outputs decode into the true teeth."""

from __future__ import annotations

import numpy as np

from geot.data.features import point_features
from geot.decode import decode, estimate_priors, instance_quality
from geot.decode.graph import vertex_graph
from geot.decode.simulate import simulate_offsets, simulate_posteriors
from geot.io.teeth3ds import find_scans, read_scan
from tests.conftest import REAL_DATA, real_data


@real_data
def test_real_jaws_decode_into_their_teeth() -> None:
    paths = sorted(p.mesh for p in find_scans(REAL_DATA))
    scans = [read_scan(p) for p in paths[:4] + paths[-4:] + paths[20:36]]   # upper and lower jaws
    canon = [(s, point_features(s).pos.astype(np.float64), s.classes()) for s in scans]
    test, train = canon[:8], canon[8:]
    for scan, points, classes in test:
        priors = estimate_priors((p, c) for s, p, c in train if s.jaw == scan.jaw)
        rng = np.random.default_rng(0)
        probs = simulate_posteriors(points, classes, vertex_graph(points, scan.faces), rng)
        offsets = simulate_offsets(points, classes, 0.3 * priors.tooth_width, rng)
        out = decode(probs, points, scan.jaw, scan.faces, offsets=offsets, priors=priors)
        quality = instance_quality(out.instances, classes)
        assert quality["split"] == quality["merged"] == quality["missed"] == 0, (scan.name, quality)
        for cls in np.unique(classes[classes > 0]):            # every tooth mostly carries its own code
            assert np.mean(out.classes[classes == cls] == cls) > 0.6, (scan.name, cls)
