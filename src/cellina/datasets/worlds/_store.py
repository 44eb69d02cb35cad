"""How a world's truth is written into its AnnData and read back (h5ad-safe: no None, no lists of dicts).

Layout of the truth:

* ``uns["cellina_world"]``: version, name, the full specification (``spec``), types, domains,
  slides, and per channel its sensing, dose-response and calibration (``low``, ``high``,
  ``reference``) and its ligand genes;
* ``var``: ``cellina_programme``, ``cellina_world_channel``, ``cellina_true_baseline``,
  ``cellina_true_theta``, ``cellina_true_state_effect``;
* ``varm``: ``cellina_world_type_effects`` (genes x fine types), ``cellina_world_batch`` (genes x
  slides, log), ``cellina_world_response_<channel>`` (genes x coarse types, log);
* ``obs``: ``cellina_true_size``, ``cellina_true_state``, ``cellina_world_structure``,
  ``cellina_world_gradient`` and, for inspection, ``cellina_world_sensed_<channel>`` (the level
  each cell senses; NaN where nothing is in reach);
* ``obsm["spatial"]`` (um), ``obs["slide"]`` and ``obs["cell_type"]``.
"""

from __future__ import annotations

from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellina.datasets._errors import DatasetTypeError, TruthKeyError
from cellina.datasets._inputs import as_str_list
from cellina.datasets.worlds._catalogue import COARSE_TYPES, DOMAINS, FINE_TO_COARSE, FINE_TYPES, TARGET_SUM
from cellina.datasets.worlds._genes import Panel
from cellina.datasets.worlds._mechanism import Cells, ChannelModel, WorldModel
from cellina.datasets.worlds._spec import WorldSpec, spec_to_dict

WORLD_KEY = "cellina_world"
WORLD_VERSION = 1
TYPE_EFFECTS_KEY = "cellina_world_type_effects"
BATCH_KEY = "cellina_world_batch"
RESPONSE_PREFIX = "cellina_world_response_"
SENSED_PREFIX = "cellina_world_sensed_"
_VAR = ("cellina_true_baseline", "cellina_true_state_effect")
_OBS = (
    "slide",
    "cell_type",
    "cellina_true_size",
    "cellina_true_state",
    "cellina_world_structure",
    "cellina_world_gradient",
)


def build_model(spec: WorldSpec, panel: Panel) -> WorldModel:
    """The (not yet calibrated) model of ``spec`` on ``panel``."""
    channels = tuple(
        ChannelModel(
            name=c.name,
            sensed=c.sensed,
            kernel=c.kernel,
            scale=c.scale,
            reach=c.reach,
            dose=c.dose,
            half_saturation=c.half_saturation,
            threshold=c.threshold,
            width=c.width,
            senders=np.array([1.0 if f in c.sender_types else 0.0 for f in FINE_TYPES]),
            ligand=panel.ligand.get(c.name, np.zeros(0, dtype=np.int64)),
            response=panel.response[c.name],
        )
        for c in spec.channels
    )
    return WorldModel(
        baseline=panel.baseline,
        type_effects=panel.type_effects,
        state_effect=panel.state_effect,
        batch=panel.batch,
        fine_to_coarse=np.array([COARSE_TYPES.index(FINE_TO_COARSE[f]) for f in FINE_TYPES]),
        channels=channels,
        target_sum=TARGET_SUM,
    )


def _channel_record(channel: ChannelModel, names: list[str]) -> dict[str, Any]:
    return {
        "sensed": channel.sensed,
        "kernel": channel.kernel,
        "scale": channel.scale,
        "reach": channel.reach,
        "dose": channel.dose,
        "half_saturation": channel.half_saturation,
        "threshold": channel.threshold,
        "width": channel.width,
        "low": channel.low,
        "high": channel.high,
        "reference": channel.reference,
        "senders": [f for f, on in zip(FINE_TYPES, channel.senders, strict=True) if on],
        "ligand_genes": [names[g] for g in channel.ligand],
        "response_key": RESPONSE_PREFIX + channel.name,
    }


def _obs(spec: WorldSpec, cells: Cells, domain: np.ndarray, model: WorldModel, sensed: np.ndarray) -> pd.DataFrame:
    coarse_codes = model.fine_to_coarse[cells.fine]
    obs = pd.DataFrame(
        {
            "slide": pd.Categorical.from_codes(cells.slide, categories=[f"slide_{i}" for i in range(spec.n_slides)]),
            "domain": pd.Categorical.from_codes(domain, categories=list(DOMAINS)),
            "cell_type": pd.Categorical.from_codes(cells.fine, categories=list(FINE_TYPES)),
            "coarse_type": pd.Categorical.from_codes(coarse_codes, categories=list(COARSE_TYPES)),
            "cellina_true_size": cells.size,
            "cellina_true_state": cells.state,
            "cellina_world_structure": cells.structure,
            "cellina_world_gradient": cells.gradient,
        },
        index=pd.Index(np.char.add("cell_", np.arange(cells.fine.size).astype(str)), dtype=object),
    )
    for c, channel in enumerate(model.channels):
        obs[SENSED_PREFIX + channel.name] = sensed[:, c]
    return obs


def write_world(
    spec: WorldSpec,
    panel: Panel,
    cells: Cells,
    domain: np.ndarray,
    model: WorldModel,
    sensed: np.ndarray,
    counts: sp.csr_matrix,
) -> ad.AnnData:
    """Assemble the AnnData of a generated world, truth included."""
    var = pd.DataFrame(
        {
            "cellina_programme": pd.Categorical(
                panel.programme, categories=["marker", "state", "ligand", "response", "null"]
            ),
            "cellina_world_channel": panel.channel,
            "cellina_true_baseline": panel.baseline,
            "cellina_true_theta": panel.theta,
            "cellina_true_state_effect": panel.state_effect,
        },
        index=pd.Index(panel.names, dtype=object),
    )
    varm = {TYPE_EFFECTS_KEY: panel.type_effects, BATCH_KEY: panel.batch}
    varm.update({RESPONSE_PREFIX + c.name: c.response for c in model.channels})
    truth = {
        "version": WORLD_VERSION,
        "name": spec.name,
        "description": spec.description,
        "spec": spec_to_dict(spec),
        "fine_types": list(FINE_TYPES),
        "coarse_types": list(COARSE_TYPES),
        "fine_to_coarse": dict(FINE_TO_COARSE),
        "domains": list(DOMAINS),
        "target_sum": TARGET_SUM,
        "channel_order": [c.name for c in model.channels],
        "channels": {c.name: _channel_record(c, panel.names) for c in model.channels},
        "programmes": panel.programmes,
        "n_cells": int(cells.fine.size),
        "n_genes": len(panel.names),
    }
    adata = ad.AnnData(
        X=counts,
        obs=_obs(spec, cells, domain, model, sensed),
        var=var,
        obsm={"spatial": cells.coords},
        varm=varm,
        uns={WORLD_KEY: truth},
    )
    adata.layers["counts"] = counts.copy()
    return adata


def _require(adata: Any, truth: dict) -> None:
    if adata.n_obs != int(truth["n_cells"]) or adata.n_vars != int(truth["n_genes"]):
        raise ValueError(
            f"adata has {adata.n_obs} cells x {adata.n_vars} genes but uns[{WORLD_KEY!r}] describes "
            f"{int(truth['n_cells'])} x {int(truth['n_genes'])}: the truth needs the whole world "
            "(neighbourhoods reach outside any subset), not a subset"
        )
    needed = [("var", k, adata.var) for k in _VAR] + [("obs", k, adata.obs) for k in _OBS]
    needed += [("varm", k, adata.varm) for k in (TYPE_EFFECTS_KEY, BATCH_KEY)]
    needed += [("varm", str(c["response_key"]), adata.varm) for c in truth["channels"].values()]
    needed += [("obsm", "spatial", adata.obsm)]
    for where, key, holder in needed:
        if key not in holder:
            raise TruthKeyError(f"adata.{where} has no {key!r} needed for the world's exact truth")


def read_world(adata: Any) -> tuple[WorldModel, Cells]:
    """The model and cells of a world AnnData (possibly read back from .h5ad)."""
    if not hasattr(adata, "uns") or not hasattr(adata, "obs"):
        raise DatasetTypeError(f"expected an AnnData, got {type(adata).__name__}")
    if WORLD_KEY not in adata.uns:
        raise TruthKeyError(f"adata.uns has no {WORLD_KEY!r}: this is not a world from cellina.datasets.make_world")
    truth = adata.uns[WORLD_KEY]
    _require(adata, truth)
    fine_types = as_str_list(truth["fine_types"])
    coarse_types = as_str_list(truth["coarse_types"])
    fine_to_coarse = {str(k): str(v) for k, v in truth["fine_to_coarse"].items()}
    fine = pd.Categorical(adata.obs["cell_type"].astype(str), categories=fine_types).codes.astype(np.int64)
    if (fine < 0).any():
        raise ValueError(f"adata.obs['cell_type'] has values outside the world's types {fine_types}")
    slides = adata.obs["slide"]
    if isinstance(slides.dtype, pd.CategoricalDtype):  # the stored order: batch columns follow it
        slide_codes = slides.cat.codes.to_numpy()
    else:
        slide_codes = pd.Categorical(slides.astype(str), categories=sorted(set(slides.astype(str)))).codes
    index = {str(g): i for i, g in enumerate(adata.var_names)}
    missing = [g for c in truth["channels"].values() for g in as_str_list(c["ligand_genes"]) if g not in index]
    if missing:
        raise TruthKeyError(f"ligand genes {missing} of uns[{WORLD_KEY!r}] are not in adata.var_names")
    channels = []
    for name in as_str_list(truth["channel_order"]):
        rec = truth["channels"][name]
        channels.append(
            ChannelModel(
                name=name,
                sensed=str(rec["sensed"]),
                kernel=str(rec["kernel"]),
                scale=float(rec["scale"]),
                reach=float(rec["reach"]),
                dose=str(rec["dose"]),
                half_saturation=float(rec["half_saturation"]),
                threshold=float(rec["threshold"]),
                width=float(rec["width"]),
                senders=np.array([1.0 if f in set(as_str_list(rec["senders"])) else 0.0 for f in fine_types]),
                ligand=np.array([index[g] for g in as_str_list(rec["ligand_genes"])], dtype=np.int64),
                response=np.asarray(adata.varm[str(rec["response_key"])], dtype=np.float64),
                low=float(rec["low"]),
                high=float(rec["high"]),
                reference=float(rec["reference"]),
            )
        )
    model = WorldModel(
        baseline=adata.var["cellina_true_baseline"].to_numpy(np.float64),
        type_effects=np.asarray(adata.varm[TYPE_EFFECTS_KEY], dtype=np.float64),
        state_effect=adata.var["cellina_true_state_effect"].to_numpy(np.float64),
        batch=np.asarray(adata.varm[BATCH_KEY], dtype=np.float64),
        fine_to_coarse=np.array([coarse_types.index(fine_to_coarse[f]) for f in fine_types]),
        channels=tuple(channels),
        target_sum=float(truth["target_sum"]),
    )
    obs = adata.obs
    cells = Cells(
        coords=np.asarray(adata.obsm["spatial"], dtype=np.float64),
        slide=np.asarray(slide_codes, dtype=np.int64),
        fine=fine,
        state=obs["cellina_true_state"].to_numpy(np.float64),
        size=obs["cellina_true_size"].to_numpy(np.float64),
        structure=obs["cellina_world_structure"].to_numpy(np.float64),
        gradient=obs["cellina_world_gradient"].to_numpy(np.float64),
    )
    return model, cells
