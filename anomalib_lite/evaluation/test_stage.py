"""The test stage's evaluation: per-image records in, metrics and CSV rows out.

:class:`Evaluator` collects a record per test batch and computes the results. Records are
gathered from every process and de-duplicated by path (distributed samplers pad the last
batch with repeats), so the metrics equal a single-process run's.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from anomalib_lite.metrics import aupro, f1_max, image_metrics, per_defect_auroc, pixel_auroc
from anomalib_lite.scoring import Scorer
from anomalib_lite.scoring.post_processor import PostProcessor

AUPRO_FPR_LIMIT = 0.3


def batch_record(batch: dict[str, Any], scores: dict[str, Tensor],
                 maps: dict[str, Tensor]) -> dict[str, Any]:
    """One test batch on the CPU; maps are brought to the masks' resolution."""
    masks = batch["mask"]
    size = masks.shape[-2:]
    return {
        "path": list(batch["path"]),
        "defect_type": list(batch["defect_type"]),
        "label": batch["label"].detach().long().cpu(),
        "scores": {k: v.detach().double().cpu() for k, v in scores.items()},
        "maps": {k: (v if v.shape[-2:] == size else
                     F.interpolate(v, size=size, mode="bilinear", align_corners=False))
                 .detach().float().cpu()[:, 0] for k, v in maps.items()},
        "mask": (masks.detach().cpu()[:, 0] > 0.5),
    }


def gather_records(batches: list[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate batch records from all processes, keeping the first record per path,
    ordered by path (so that files and metrics do not depend on the number of processes)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        gathered: list[list[dict[str, Any]] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, batches)
        batches = [b for rank_batches in gathered for b in (rank_batches or [])]
    if not batches:
        raise RuntimeError("the test stage saw no images: check the test split")
    paths = [p for b in batches for p in b["path"]]
    first: dict[str, int] = {}
    for i, path in enumerate(paths):
        first.setdefault(path, i)
    keep = torch.tensor(sorted(first.values(), key=lambda i: paths[i]), dtype=torch.long)

    def cat(key: str, sub: str | None = None) -> Tensor:
        parts = [b[key] if sub is None else b[key][sub] for b in batches]
        return torch.cat(parts)[keep]

    defects = [d for b in batches for d in b["defect_type"]]
    return {
        "path": [paths[i] for i in keep.tolist()],
        "defect_type": [defects[i] for i in keep.tolist()],
        "label": cat("label"),
        "scores": {k: cat("scores", k) for k in batches[0]["scores"]},
        "maps": {k: cat("maps", k) for k in batches[0]["maps"]},
        "mask": cat("mask"),
    }


def evaluate(records: dict[str, Any], scorer: Scorer, thresholds: dict[str, float],
             pixel_threshold: float = float("nan"),
             threshold_rule: dict[str, Any] | None = None) -> dict[str, Any]:
    """Image metrics per score, pixel metrics per anomaly map."""
    labels, defects = records["label"], records["defect_type"]
    per_score = {}
    for name, scores in records["scores"].items():
        metrics = image_metrics(scores, labels, thresholds[name])
        f1, oracle = f1_max(scores, labels)
        metrics["per_defect_auroc"] = per_defect_auroc(scores, labels, defects)
        metrics["oracle"] = {"f1_max": f1, "threshold": oracle,
                             "note": "F1-optimal threshold chosen on test labels"}
        per_score[name] = metrics
    pixel = {key: {"pixel_auroc": pixel_auroc(amap, records["mask"]),
                   "aupro": aupro(amap, records["mask"], AUPRO_FPR_LIMIT)}
             for key, amap in records["maps"].items()}
    return {"primary_score": scorer.primary, "primary_map": scorer.primary_map,
            "threshold_rule": threshold_rule, "scores": per_score, "pixel": pixel,
            "pixel_threshold": pixel_threshold,
            "aupro_fpr_limit": AUPRO_FPR_LIMIT}


def score_rows(records: dict[str, Any], scorer: Scorer,
               thresholds: dict[str, float]) -> list[dict[str, Any]]:
    """One row per test image: path, label, defect type, every score, primary decision."""
    primary = records["scores"][scorer.primary]
    decisions = (primary > thresholds[scorer.primary]).tolist()
    rows = []
    for i, path in enumerate(records["path"]):
        row = {"path": path, "label": int(records["label"][i]),
               "defect_type": records["defect_type"][i]}
        row.update({name: float(values[i]) for name, values in records["scores"].items()})
        row["anomalous"] = int(decisions[i])
        rows.append(row)
    return rows


class Evaluator:
    """Collects the test batches' records; ``compute`` gives the results and CSV rows."""

    def __init__(self) -> None:
        self.batches: list[dict[str, Any]] = []

    def update(self, batch: dict[str, Any], scores: dict[str, Tensor],
               maps: dict[str, Tensor]) -> None:
        self.batches.append(batch_record(batch, scores, maps))

    def compute(self, scorer: Scorer, post: PostProcessor) -> tuple[dict[str, Any],
                                                                      list[dict[str, Any]]]:
        """Gather every process's records, then ``(results, rows)``; resets the records."""
        records = gather_records(self.batches)
        self.batches = []
        thresholds = {name: post.threshold_of(name) for name in records["scores"]}
        results = evaluate(records, scorer, thresholds, float(post.pixel_threshold), post.rule)
        return results, score_rows(records, scorer, thresholds)
