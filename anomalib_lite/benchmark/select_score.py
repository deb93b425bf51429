"""Choose a trained model's headline score on synthetic validation anomalies only.

    python -m anomalib_lite.benchmark.select_score <run_dir> [--repeats 10] [--family NAME]

Loads ``<run_dir>/model.ckpt`` and the run's data config, pastes ``repeats`` fresh
fixed-seed synthetic anomalies (the model's own ``synthesize``, or with ``--family`` those
of ``conf/synthesis/<NAME>.yaml``, e.g. a family the model was not trained on) on every normal
validation image, and reports for every score the image AUROC (clean validation images vs
their corrupted copies) and for every map the pixel AUROC (synthetic masks). The
validation split holds normal images only: no test image or label is read. The table is
printed and written to ``<run_dir>/synthetic_selection.json``; scores are ranked by image
AUROC, ties broken by the pixel AUROC of their map.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import OmegaConf

from anomalib_lite.cli import CONFIG_DIR
from anomalib_lite.data.synthetic import SyntheticAnomalies
from anomalib_lite.metrics import pixel_auroc
from anomalib_lite.models import AnomalyModule
from anomalib_lite.utils.checks import ConfigError
from anomalib_lite.utils.instantiate import build
from anomalib_lite.utils.io import write_json

SEED_OFFSET = 10_000  # apart from the seeds of the per-epoch synthetic validation
PIXELS_PER_IMAGE = 4096


@torch.no_grad()
def synthesis_family(name: str) -> SyntheticAnomalies:
    """The synthetic anomaly family ``conf/synthesis/<name>.yaml``, every image corrupted."""
    path = Path(CONFIG_DIR) / "synthesis" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"--family {name!r}: no {path}; the families are {known}")
    return build({**OmegaConf.to_container(OmegaConf.load(path)), "probability": 1.0},
                 f"synthesis/{name}")


def synthetic_selection(run_dir: Path, repeats: int = 10, data_cfg: Any = None,
                        family: str | None = None) -> dict[str, Any]:
    """Rank the scores of ``run_dir``'s model (see the module doc). ``data_cfg``: the
    data config (default: the run's ``.hydra/config.yaml``); ``family``: a synthesis
    family's name (default: the model's own anomalies)."""
    model = AnomalyModule.load_from_checkpoint(run_dir / "model.ckpt", map_location="cpu",
                                               weights_only=True).eval()
    synthesis = synthesis_family(family) if family else None
    if synthesis is None and not model.net.synthesizes:
        raise ValueError(f"{run_dir}'s model makes no synthetic anomalies: pass --family")
    if data_cfg is None:
        data_cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml").data
    datamodule = hydra.utils.instantiate(data_cfg, _convert_="all")
    datamodule.setup("fit")
    normal: dict[str, list] = {n: [] for n in model.scorer.names}
    anomalous: dict[str, list] = {n: [] for n in model.scorer.names}
    maps: dict[str, list] = {}
    masks: list = []
    for b, batch in enumerate(datamodule.eval_loader("val")):
        images = batch["image"][batch["label"] == 0].float()
        out = model.predict_batch(images)
        for name in model.scorer.names:
            normal[name].append(out["scores"][name])
        for r in range(repeats):
            generator = torch.Generator().manual_seed(SEED_OFFSET + 1000 * r + b)
            corrupted, mask = model.net.synthesize(images, generator) if synthesis is None \
                else synthesis(images, generator=generator)
            out = model.predict_batch(corrupted)
            for name in model.scorer.names:
                anomalous[name].append(out["scores"][name])
            stride = max(1, mask[0].numel() // PIXELS_PER_IMAGE)
            for key, amap in out["maps"].items():
                maps.setdefault(key, []).append(amap.flatten(1)[:, ::stride])
            masks.append(mask.flatten(1)[:, ::stride])
    mask_all = torch.cat(masks)
    pixel = {key: pixel_auroc(torch.cat(v), mask_all) for key, v in maps.items()}
    rows = []
    for name in model.scorer.names:
        n, a = torch.cat(normal[name]), torch.cat(anomalous[name])
        labels = torch.cat([torch.zeros_like(n), torch.ones_like(a)])
        map_key = model.scorer.specs[name].map_key
        rows.append({"score": name, "image_auroc": pixel_auroc(torch.cat([n, a]), labels),
                     "map": map_key, "pixel_auroc": pixel[map_key]})
    rows.sort(key=lambda r: (-r["image_auroc"], -r["pixel_auroc"]))
    return {"run_dir": str(run_dir), "repeats": repeats, "family": family or "own",
            "n_normal": len(torch.cat(
        normal[model.scorer.names[0]])), "chosen": rows[0]["score"], "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--family", help="a conf/synthesis/ family (default: the model's own)")
    args = parser.parse_args(argv)
    result = synthetic_selection(args.run_dir, args.repeats, family=args.family)
    print(f"synthetic validation: {result['n_normal']} normal images x {args.repeats} "
          "anomalies each\n| score | image AUROC | map | pixel AUROC |\n|---|---|---|---|")
    for r in result["rows"]:
        print(f"| {r['score']} | {r['image_auroc']:.4f} | {r['map']} | {r['pixel_auroc']:.4f} |")
    print(f"chosen: {result['chosen']}")
    suffix = f"_{args.family}" if args.family else ""
    write_json(args.run_dir / f"synthetic_selection{suffix}.json", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
