"""Write docs/presets.md from cellina.model.presets, so the page cannot drift from the code.

Usage::

    python docs/make_presets_page.py
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from cellina.model.presets import OPTION_NOTES, PUBLISHED, RECOMMENDED

PAGE = Path(__file__).resolve().parent / "presets.md"

INTRO = """# Presets: the published objective and the recommended one

A preset is a named set of model and training options (`cellina.model.presets`). Every face
reads the same ones: `Cellina.from_preset(adata, "recommended")` in Python, `cellina train
--preset recommended` on the command line, the preset choice of the Model dock. Options a preset
does not set keep their defaults; sizes (`n_latent`, `n_hidden`, `n_layers`) and the training
length stay yours. `Cellina(adata, ...)` without a preset builds the published architecture with
the constructor's defaults, which is what the published tutorial's calls expect.

* **published** reproduces the published training objective exactly: spatial KL weight 1,
  scvi-tools' 400-epoch KL warm-up, the published adversary (minus the discriminator's
  cross-entropy) and loss normalisation measured over an epoch 0 that does not train. A test
  checks its loss against a hand computation of the published objective on one minibatch
  (`tests/model/test_published_objective.py`).
* **recommended** is what the project measured to predict niche responses of the right size.
"""

EFFECTS = """## Measured effect

Figures from `docs/benchmarks.md`, each with the command that produced it.

* **Whole presets, every held-out type** (section "The two presets on every held-out type",
  `python benchmarks/accuracy_presets.py`, 3,000 cells, 60 epochs, one run each): mean over the
  seven evaluable types, edge perturbation, recommended vs published: tutorial top-50 Pearson
  0.69 vs 0.45, exact-truth Pearson 0.87 vs 0.76, skill 0.68 vs 0.40, slope 0.52 vs 0.28.
  The recommended preset is ahead on every type by skill, on six of seven by the tutorial's
  metric (B_cell: 0.56 vs 0.57) and by exact-truth Pearson (Myeloid: a tie at 0.91). Node
  perturbations on this tissue are poor with both presets for most types (negative skill): the
  exact node change there is small, and this is open work.
* **spatial_kl_weight**: on a 2,000-cell tissue (healthy Myeloid rewired to tumour donors),
  weight 1 gave a change of the right direction but 1.5 % of the true size after 100 epochs
  (slope 0.015, skill 0.03); weight 0.1 gave slope 0.38 (skill 0.61) after 100 epochs and 0.70
  (skill 0.90) after 300, with the domain still at chance from z (measured when the option was
  introduced; an independent tissue showed the same collapse of s at weight 1).
* **niche_decoder**, **spatial_decoding** (section "Counterfactual accuracy", held-out
  Myeloid over 3 seeds, edge): skill 0.62 (`concat`, published) -> 0.85 (`type_gated`) -> 0.84
  (`type_gated` with `spatial_decoding="mean"`), and on the node perturbation skill 0.23 -> 0.72
  when the decoder learns from the posterior mean of s.
* **type_aware_discriminator** (section "Counterfactual accuracy over training seeds", 8 types x
  4 seeds): tutorial top-50 Pearson 0.885 -> 0.908, skill 0.852 -> 0.887, slope 0.685 -> 0.761.
* **encode_batch** (section "Slide effects in the latents"): with a strong slide effect the slide
  is read from z with balanced accuracy 0.61 whether the batch enters the decoder only or both
  encoders too (chance 0.5; an earlier run of the same script gave 0.61 and 0.67), and perfectly
  from s in both cases: the niche features themselves carry the slide, which the encoders'
  batch input does not remove. The option is kept because it is the published model.
"""


def page() -> str:
    rows = ["| option | published | recommended | what it does |", "|---|---|---|---|"]
    options = list(dict.fromkeys([*PUBLISHED.model, *RECOMMENDED.model, *PUBLISHED.plan, *RECOMMENDED.plan]))
    for option in options:
        where = PUBLISHED.plan if option in PUBLISHED.plan or option in RECOMMENDED.plan else PUBLISHED.model
        other = RECOMMENDED.plan if where is PUBLISHED.plan else RECOMMENDED.model
        kind = "plan" if where is PUBLISHED.plan else "model"
        cells = [
            f"`{where[option]!r}`" if option in where else "default",
            f"`{other[option]!r}`" if option in other else "default",
        ]
        rows.append(f"| `{option}` ({kind}) | {cells[0]} | {cells[1]} | {OPTION_NOTES[option]} |")
    return "\n".join([INTRO, "## What each preset sets", "", *rows, "", EFFECTS])


def main() -> None:
    fd, tmp = tempfile.mkstemp(dir=PAGE.parent, prefix=".presets.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(page())
    os.replace(tmp, PAGE)


if __name__ == "__main__":
    main()
