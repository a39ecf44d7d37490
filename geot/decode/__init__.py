"""The dentition decoder: per-vertex posteriors (and centroid offsets) in, one FDI code per tooth out.

Stages: graph cut (:mod:`.graphcut`), tooth instances (:mod:`.instances`), numbering along the arch
(:mod:`.numbering`), tied together by :func:`decode`.
"""

from geot.decode.decoder import DecodeError, DecodeOptions, Dentition, Tooth, decode
from geot.decode.numbering import NumberingWeights
from geot.decode.priors import ArchPriors, estimate_priors
from geot.decode.quality import instance_quality

__all__ = ["ArchPriors", "DecodeError", "DecodeOptions", "Dentition", "NumberingWeights", "Tooth", "decode",
           "estimate_priors", "instance_quality"]
