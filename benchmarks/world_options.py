"""One model option set on one development world and held-out type: the tuning tool behind the
"Why niche responses shrink" section of docs/benchmarks.md.

Usage::

    python benchmarks/world_options.py dev_two_channels Myeloid base
    python benchmarks/world_options.py dev_two_channels Myeloid linear m.spatial_encoder='"linear"'
    python benchmarks/world_options.py dev_two_channels Myeloid adversary m.niche_adversary_lambda=1
    python benchmarks/world_options.py dev_two_channels Myeloid wide bandwidth=40 epochs=100

``m.NAME=JSON`` sets a model option on top of the preset, ``p.NAME=JSON`` a training-plan option;
``bandwidth``, ``max_neighbours``, ``epochs``, ``preset`` and ``seed`` set the protocol. Prints one
``RESULT {json}`` line: edge and node truth scores, the tutorial's top-DEG Pearson, the latent
probes (``niche_from_z``: how much of the niche beyond the type leaks into z) and seconds.
Use development worlds only: the evaluation worlds judge choices made here (benchmarks/worlds.py).
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SCORES = ("truth_pearson", "truth_skill", "truth_slope", "truth_auroc", "pearson")


def main(argv: list[str]) -> int:
    from worlds import MODEL_SIZE, run_protocol

    from cellina.datasets import list_worlds, make_world

    world, holdout, label = argv[:3]
    if world not in list_worlds("development"):
        raise SystemExit(f"{world!r} is not a development world; use one of {list_worlds('development')}.")
    opts = {"bandwidth": 20.0, "max_neighbours": 50, "epochs": 40, "preset": "recommended", "seed": 0}
    model, plan = {}, {}
    for item in argv[3:]:
        key, _, value = item.partition("=")
        target = model if key.startswith("m.") else plan if key.startswith("p.") else opts
        target[key[2:] if key[:2] in ("m.", "p.") else key] = json.loads(value)
    cfg = {
        "bandwidth": opts["bandwidth"],
        "max_neighbours": opts["max_neighbours"],
        "seed": opts["seed"],
        "n_draws": 1,
        "model": MODEL_SIZE,
        "train": {"max_epochs": opts["epochs"], "batch_size": 512},
    }
    adata = make_world(world)
    t0 = time.time()
    res = run_protocol(adata, holdout, "cellina", opts["preset"], "cellina", cfg, model, plan, probes=True)
    scores = res.scores.set_index("perturbation")
    row = {"label": label, "world": world, "type": holdout, "seconds": round(time.time() - t0)}
    for pert in ("edge", "node"):
        for col in SCORES:
            if pert in scores.index and col in scores:
                row[f"{pert}_{col}"] = round(float(scores.loc[pert, col]), 3)
    row.update({k: round(v, 3) for k, v in res.disentanglement.get("cellina", {}).items()})
    print("RESULT", json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    raise SystemExit(main(sys.argv[1:]))
