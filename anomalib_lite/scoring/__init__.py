"""From a reconstruction to anomaly maps, image scores and thresholds."""

from anomalib_lite.scoring.maps import MAP_KINDS, anomaly_map, smooth_map
from anomalib_lite.scoring.reductions import REDUCTIONS, reduce_map
from anomalib_lite.scoring.scorer import Scorer
from anomalib_lite.scoring.threshold import fit_threshold

__all__ = ["MAP_KINDS", "REDUCTIONS", "Scorer", "anomaly_map", "fit_threshold", "reduce_map",
           "smooth_map"]
