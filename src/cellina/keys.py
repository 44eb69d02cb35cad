"""AnnData keys that every face of Cellina reads and writes, defined once.

The names follow scverse habits (``obsm["spatial"]``, ``obsp["spatial_connectivities"]``,
``layers["counts"]``); everything Cellina adds on its own is prefixed ``cellina`` or lives under
``uns["cellina"]``. Import the namespaces rather than repeating the strings::

    from cellina.keys import OBSM, OBSP
    adata.obsm[OBSM.NICHE_FEATURES]
"""

from __future__ import annotations

from typing import Final


class OBSM:
    """``adata.obsm`` keys."""

    #: cell coordinates (x, y), in micrometres unless a pixel size says otherwise
    SPATIAL: Final = "spatial"
    #: niche features: the weighted mean of each cell's neighbours' log-normalised expression
    NICHE_FEATURES: Final = "spatial_x"
    #: niche features after a node perturbation (the published tutorial's key)
    PERTURBED_NICHE: Final = "spatial_x_cf"
    #: the plugin's node-perturbed niche features (kept apart from a user's own)
    PLUGIN_PERTURBED_NICHE: Final = "cellina_spatial_x_cf"
    #: latents written for display and export
    Z: Final = "cellina_z"
    S: Final = "cellina_s"


class OBSP:
    """``adata.obsp`` keys."""

    #: the spatial graph niche features are built on (held-out cells masked out when training)
    CONNECTIVITIES: Final = "spatial_connectivities"
    DISTANCES: Final = "spatial_distances"
    #: the unmasked graph kept beside a held-out training graph (the published tutorial's key)
    UNMASKED: Final = "spatial_connectivities_orig"
    #: a rewired graph written by make_counterfactual_adata
    COUNTERFACTUAL: Final = "spatial_connectivities_cf"


class LAYERS:
    """``adata.layers`` keys."""

    COUNTS: Final = "counts"
    #: log1p(normalize_total) of the counts, written by Cellina's preprocessing
    LOGNORM: Final = "cellina_lognorm"
    #: perturbed sender counts for graph encoders (the published README's key)
    PERTURBED_COUNTS: Final = "counts_cf"
    #: an export's expected counts of the current run's focal cells: counterfactual, factual, and
    #: the counterfactual's standard deviation across draws (edge runs with several draws; the run's
    #: ``uncertainty`` says whether the draws sample the model's posterior as well as the donors)
    COUNTERFACTUAL: Final = "cellina_counterfactual"
    FACTUAL: Final = "cellina_factual"
    COUNTERFACTUAL_STD: Final = "cellina_counterfactual_std"


class UNS:
    """``adata.uns`` keys; everything of Cellina's lives under :attr:`ROOT`."""

    ROOT: Final = "cellina"
    SPATIAL_FEATURES: Final = "spatial_features"
    NEIGHBOR_PERTURBATION: Final = "neighbor_perturbation"
    PERTURBED_EXPRESSION: Final = "perturbed_expression"
    PROVENANCE: Final = "provenance"


class OBS:
    """``adata.obs`` columns Cellina adds."""

    FOCAL: Final = "cellina_focal"
    DONORS: Final = "cellina_donors"
    HELDOUT: Final = "cellina_heldout"
    #: an export's current run: its focal cells
    COUNTERFACTUAL_CELLS: Final = "cellina_counterfactual_cells"
    #: percentile (0-100) of a focal cell's counterfactual niche among the training niches
    #: (cellina.counterfactual.niche_novelty); NaN for cells that are not focal
    NICHE_NOVELTY: Final = "cellina_niche_novelty"
    #: whether that niche lies outside what the model saw in training (beyond the 99th percentile)
    OUTSIDE_TRAINING: Final = "cellina_outside_training"
