"""The configured set of image scores: which map, which reduction, and the primary score."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor

from anomalib_lite.scoring.maps import MAP_KINDS, anomaly_map, smooth_map
from anomalib_lite.scoring.reductions import REDUCTIONS, reduce_map
from anomalib_lite.scoring.threshold import THRESHOLD_METHODS
from anomalib_lite.utils import checks

# maps made by the network itself, not from (image, reconstruction): ``seg`` is the
# sigmoid of a segmentation head (networks with ``segment``, e.g. DraemLite)
NET_MAP_KINDS = ("seg",)
ALL_MAP_KINDS = (*MAP_KINDS, *NET_MAP_KINDS)


@dataclass(frozen=True)
class ScoreSpec:
    """``map`` smoothed by a Gaussian of ``sigma`` pixels (0: none), reduced by ``reduce``.

    ``map`` is one kind (``"l1"``) or a weighted sum of kinds (``{"l1": 0.5, "ssim": 0.5}``,
    stored as ``(("l1", 0.5), ("ssim", 0.5))``).
    """

    map: str | tuple[tuple[str, float], ...]
    reduce: str
    k: float = 0.01
    sigma: float = 0.0

    @property
    def weights(self) -> dict[str, float]:
        return {self.map: 1.0} if isinstance(self.map, str) else dict(self.map)

    @property
    def map_key(self) -> str:
        name = self.map if isinstance(self.map, str) else "+".join(
            f"{w:g}*{kind}" for kind, w in self.map)
        return name if not self.sigma else f"{name}_s{self.sigma:g}"


class Scorer:
    """Computes every configured anomaly map once and every image score from them.

    ``scores`` maps a score name to ``{map, reduce, k}``; ``primary`` names the score whose
    map and threshold are the run's headline (heatmaps, decisions).
    """

    def __init__(self, scores: Mapping[str, Mapping], primary: str, ssim_window: int = 11,
                 threshold: Mapping | None = None) -> None:
        checks.require(len(scores) > 0, "score.scores", dict(scores), "at least one score")
        self.specs: dict[str, ScoreSpec] = {}
        for name, spec in scores.items():
            spec = dict(spec)
            if isinstance(spec.get("map"), Mapping):
                weights = dict(spec["map"])
                checks.require(len(weights) > 0 and all(
                    kind in ALL_MAP_KINDS and isinstance(w, (int, float)) and w > 0
                    for kind, w in weights.items()), f"score.scores.{name}.map", weights,
                    f"a kind among {list(ALL_MAP_KINDS)} or a dict of positive weights per "
                    "kind")
                spec["map"] = tuple((kind, float(w)) for kind, w in weights.items())
            else:
                checks.one_of(f"score.scores.{name}.map", spec.get("map"), ALL_MAP_KINDS)
            checks.one_of(f"score.scores.{name}.reduce", spec.get("reduce"), REDUCTIONS)
            unknown = set(spec) - set(ScoreSpec.__dataclass_fields__)
            checks.require(not unknown, f"score.scores.{name}", sorted(unknown),
                           f"keys among {sorted(ScoreSpec.__dataclass_fields__)}")
            checks.in_range(f"score.scores.{name}.sigma", spec.get("sigma", 0.0), 0.0, 64.0)
            checks.require(0 < spec.get("k", 0.01) <= 1, f"score.scores.{name}.k",
                           spec.get("k"), "a fraction in (0, 1]")
            self.specs[name] = ScoreSpec(**spec)
        checks.one_of("score.primary", primary, self.specs)
        self.primary = primary
        checks.require(isinstance(ssim_window, int) and ssim_window >= 3 and ssim_window % 2,
                       "score.ssim_window", ssim_window, "an odd integer >= 3")
        self.ssim_window = ssim_window
        self.threshold = dict(threshold or {"method": "quantile", "quantile": 0.99})
        checks.one_of("score.threshold.method", self.threshold.get("method"),
                               THRESHOLD_METHODS)
        checks.in_range("score.threshold.quantile", self.threshold.get("quantile", 0.99),
                        1e-9, 1.0)
        unknown = set(self.threshold) - {"method", "quantile", "k"}
        checks.require(not unknown, "score.threshold", sorted(unknown),
                       "keys among ['k', 'method', 'quantile']")

    @property
    def names(self) -> list[str]:
        return list(self.specs)

    @property
    def primary_map(self) -> str:
        """Key (in the maps returned by ``__call__``) of the primary score's map."""
        return self.specs[self.primary].map_key

    @property
    def net_map_kinds(self) -> set[str]:
        """The network-made map kinds (``seg``) some score needs."""
        return {kind for spec in self.specs.values() for kind in spec.weights
                if kind in NET_MAP_KINDS}

    def __call__(self, image: Tensor, reconstruction: Tensor,
                 net_maps: dict[str, Tensor] | None = None) -> tuple[dict[str, Tensor],
                                                                     dict[str, Tensor]]:
        """Return ``(maps by map key, scores by name)`` for a batch; each map is made once.

        ``net_maps`` holds the network-made maps (``seg``) by kind.
        """
        net_maps = net_maps or {}
        kinds = {kind for spec in self.specs.values() for kind in spec.weights}
        missing = sorted(kinds & set(NET_MAP_KINDS) - set(net_maps))
        if missing:
            raise ValueError(f"scores use the map(s) {missing}, which only a network with a "
                             "segmentation head makes (e.g. model=draem_lite)")
        raw = {kind: net_maps[kind] if kind in NET_MAP_KINDS
               else anomaly_map(image, reconstruction, kind, self.ssim_window)
               for kind in kinds}
        maps = {}
        for spec in self.specs.values():
            if spec.map_key not in maps:
                combined = sum(w * raw[kind] for kind, w in spec.weights.items())
                maps[spec.map_key] = smooth_map(combined, spec.sigma)
        scores = {name: reduce_map(maps[s.map_key], s.reduce, s.k)
                  for name, s in self.specs.items()}
        return maps, scores
