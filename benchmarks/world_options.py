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

SCORES = ("truth_pearson", "truth_skill", "truth_slope", "truth_auroc", "pearson")


def main(argv: list[str]) -> int:
    from cellina.datasets import list_worlds, make_world
    from cellina.evaluation import leave_one_out

    world, holdout, label = argv[:3]
    if world not in list_worlds("development"):
        raise SystemExit(f"{world!r} is not a development world; use one of {list_worlds('development')}.")
    opts = {"bandwidth": 20.0, "max_neighbours": 50, "epochs": 40, "preset": "recommended", "seed": 0}
    model, plan = {"n_latent": 10, "n_hidden": 128, "n_layers": 2}, {}
    for item in argv[3:]:
        key, _, value = item.partition("=")
        target = model if key.startswith("m.") else plan if key.startswith("p.") else opts
        target[key[2:] if key[:2] in ("m.", "p.") else key] = json.loads(value)
    adata = make_world(world)
    t0 = time.time()
    res = leave_one_out(
        adata,
        holdout,
        methods=("cellina",),
        preset=opts["preset"],
        batch_key="slide",
        library_key="slide",
        perturbations=("edge", "node"),
        bandwidth=opts["bandwidth"],
        max_neighbours=opts["max_neighbours"],
        model_kwargs=model,
        plan_kwargs=plan or None,
        train_kwargs={"max_epochs": opts["epochs"], "batch_size": 512},
        n_deg=50,
        n_deg_node=20,
        n_pert_genes=max(20, adata.n_vars // 10),
        energy=False,
        probes=True,
        seed=opts["seed"],
    )
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
