"""The configured set of image scores: which map, which reduction, and the primary score."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor

from anomalib_lite.scoring.maps import smooth_map
from anomalib_lite.scoring.reductions import REDUCTIONS, reduce_map
from anomalib_lite.utils import checks


@dataclass(frozen=True)
class ScoreSpec:
    """``map`` smoothed by a Gaussian of ``sigma`` pixels (0: none), reduced by ``reduce``.

    ``map`` names one of the model's maps (``"l1"``) or is a weighted sum of them
    (``{"l1": 0.5, "ssim": 0.5}``, stored as ``(("l1", 0.5), ("ssim", 0.5))``).
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


def _map_name(value: object) -> bool:
    return isinstance(value, str) and value != "" and value.strip() == value


class Scorer:
    """Turns a model's named anomaly maps into every configured image score.

    ``scores`` maps a score name to ``{map, reduce, k, sigma}``; ``primary`` names the score
    whose map and threshold are the run's headline (heatmaps, decisions). Map names are the
    model's own (checked against the model when it is built).
    """

    def __init__(self, scores: Mapping[str, Mapping], primary: str) -> None:
        checks.require(len(scores) > 0, "score.scores", dict(scores), "at least one score")
        self.specs: dict[str, ScoreSpec] = {}
        for name, spec in scores.items():
            spec = dict(spec)
            if isinstance(spec.get("map"), Mapping):
                weights = dict(spec["map"])
                checks.require(len(weights) > 0 and all(
                    _map_name(kind) and isinstance(w, (int, float)) and w > 0
                    for kind, w in weights.items()), f"score.scores.{name}.map", weights,
                    "a map name or a dict of positive weights per map name")
                spec["map"] = tuple((kind, float(w)) for kind, w in weights.items())
            else:
                checks.require(_map_name(spec.get("map")), f"score.scores.{name}.map",
                               spec.get("map"), "the name of one of the model's maps")
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

    @property
    def names(self) -> list[str]:
        return list(self.specs)

    @property
    def primary_map(self) -> str:
        """Key (in the maps returned by ``__call__``) of the primary score's map."""
        return self.specs[self.primary].map_key

    @property
    def map_names(self) -> set[str]:
        """The model maps the scores use."""
        return {kind for spec in self.specs.values() for kind in spec.weights}

    def __call__(self, model_maps: Mapping[str, Tensor]) -> tuple[dict[str, Tensor],
                                                                  dict[str, Tensor]]:
        """``(maps by map key, scores by name)`` from the model's maps; each map made once."""
        missing = sorted(self.map_names - set(model_maps))
        if missing:
            raise ValueError(f"the scores use the map(s) {missing}, but the model returned "
                             f"only {sorted(model_maps)}")
        maps: dict[str, Tensor] = {}
        for spec in self.specs.values():
            if spec.map_key not in maps:
                combined = sum(w * model_maps[kind] for kind, w in spec.weights.items())
                maps[spec.map_key] = smooth_map(combined, spec.sigma)
        scores = {name: reduce_map(maps[s.map_key], s.reduce, s.k)
                  for name, s in self.specs.items()}
        return maps, scores
