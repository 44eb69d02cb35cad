"""One leave-one-type-out run of Cellina with a chosen training seed, appended to a CSV.

``accuracy.py`` trains every held-out type once (and the headline type with several seeds);
the seed-to-seed spread of a single type is large at this tissue size, so this script repeats
the run for any type and seed with the same tissue, graph, model and training settings as
``accuracy.py``'s full mode, to average the per-type scores over seeds::

    for s in 1 2 3 4; do for t in Myeloid Epithelial Fibroblast CAF Endothelial T_cell B_cell Plasma_cell; do
        python benchmarks/accuracy_seed.py $t $s --csv seeds.csv                        # the benchmark's variant
        python benchmarks/accuracy_seed.py $t $s --variant type_gated_mean --csv seeds.csv   # to compare with
    done; done

Besides the scores of ``cellina.evaluation.leave_one_out`` each row has ``pearson_change``:
the Pearson of the observed log-fold change with the model's own predicted change
(counterfactual vs factual prediction) on the same top DEGs, i.e. the tutorial metric without
the model's reconstruction error of the control cells.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import VARIANTS, _config, run_holdout  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("holdout", help="coarse type held out in the tumour domain")
    parser.add_argument("seed", type=int, help="training (and donor-draw) seed; the tissue is always seed 0")
    parser.add_argument(
        "--variant",
        choices=tuple(VARIANTS),
        default=None,
        help="model variant: niche decoder and spatial decoding (default: accuracy.py's setting)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--csv", required=True, help="CSV file the scores are appended to")
    args = parser.parse_args(argv)

    import torch

    from cellina.datasets import synthetic_tissue

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = _config(quick=False)
    if args.epochs is not None:
        cfg["max_epochs"] = args.epochs
    variant = args.variant or cfg["variant"]
    adata = synthetic_tissue(n_cells=cfg["n_cells"], n_genes=cfg["n_genes"], seed=0)
    if args.holdout not in set(adata.obs["coarse_type"].astype(str)):
        parser.error(f"holdout {args.holdout!r} is not a coarse type of the tissue")
    t0 = time.perf_counter()
    res = run_holdout(adata, args.holdout, cfg, ("cellina",), seed=args.seed, variant=variant)
    change = {}
    for pert in ("edge", "node"):
        frame = res.lfc[(pert, "cellina")]
        deg = frame["is_deg"].to_numpy()
        change[pert] = float(np.corrcoef(frame["true_lfc"].to_numpy()[deg], frame["pred_change"].to_numpy()[deg])[0, 1])
    scores = res.scores.assign(
        pearson_change=res.scores["perturbation"].map(change),
        holdout=args.holdout,
        seed=args.seed,
        variant=variant,
        epochs=cfg["max_epochs"],
        seconds=time.perf_counter() - t0,
    )
    print(scores.to_string(), flush=True)
    out = Path(args.csv)
    scores.to_csv(out, mode="a", header=not out.exists(), index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
