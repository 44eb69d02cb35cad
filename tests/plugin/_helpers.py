"""Polygons and state snapshots shared by the plugin's tests."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp


def grid_tissue(
    nx: int,
    ny: int,
    spacing: float,
    n_genes: int,
    rate: float,
    types: tuple[str, ...],
    keys: tuple[str, str, str, str],
    gene: str,
    cell: str,
) -> tuple[ad.AnnData, np.ndarray]:
    """Cells on an ``nx`` x ``ny`` grid (micrometres) with Poisson counts in X, random types, a
    healthy left half and a tumour right half, and the coordinates in 0.5 um pixels as two obs
    columns. ``keys`` names the type, domain, x and y columns. Returns the AnnData and (x, y) in um.
    """
    rng = np.random.default_rng(0)
    n = nx * ny
    xy = np.c_[np.repeat(np.arange(nx), ny) * spacing, np.tile(np.arange(ny), nx) * spacing]
    counts = sp.csr_matrix(rng.poisson(rate, size=(n, n_genes)).astype(np.float32))
    type_key, domain_key, x_key, y_key = keys
    obs = pd.DataFrame(
        {
            type_key: pd.Categorical(rng.choice(list(types), n)),
            domain_key: pd.Categorical(np.where(xy[:, 0] < nx * spacing / 2, "healthy", "tumour")),
            x_key: xy[:, 0] * 2,
            y_key: xy[:, 1] * 2,
        },
        index=[f"{cell}{i}" for i in range(n)],
    )
    return ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=[f"{gene}{j}" for j in range(n_genes)])), xy


def square(x0: float, y0: float, size: float) -> np.ndarray:
    """A square polygon with one corner at (x0, y0)."""
    return np.array([[x0, y0], [x0, y0 + size], [x0 + size, y0 + size], [x0 + size, y0]], dtype=float)


def quadrant(points: np.ndarray, which: str) -> np.ndarray:
    """A box over the lower ("low") or upper ("high") quarter of ``points``' bounding box."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    mid = (lo + hi) / 2
    a, b = (lo - 1, mid) if which == "low" else (mid, hi + 1)
    return np.array([[a[0], a[1]], [a[0], b[1]], [b[0], b[1]], [b[0], a[1]]])


def whole(points: np.ndarray) -> np.ndarray:
    """A box around every point."""
    lo, hi = points.min(axis=0) - 1, points.max(axis=0) + 1
    return np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]])


def session_state(session) -> dict:
    """What a failed step must leave exactly as it was: the session's state and its AnnData's entries."""
    adata = session.adata
    state = {
        "adata": adata,
        "keys": session.keys,
        "model": session.model,
        "source": session.model_source,
        "runs": dict(session.runs),
        "current": session.current_run,
        "busy": session.busy,
        "selections": {k: v.mask.copy() for k, v in session.selections.items()},
        "shifts": session.gene_shifts.table.copy(),
        "export": session.last_export,
    }
    if adata is not None:
        state.update(
            {
                "obs": adata.obs.copy(),
                "obsm": {k: adata.obsm[k] for k in adata.obsm},
                "obsp": {k: adata.obsp[k] for k in adata.obsp},
                "uns": sorted(adata.uns.keys()),
                "layers": sorted(adata.layers.keys()),
                "shape": adata.shape,
            }
        )
    return state


def assert_same_state(session, before: dict) -> None:
    """Fail naming the first part of the session that differs from ``before``."""
    after = session_state(session)
    assert after.keys() == before.keys()
    for key, value in before.items():
        now = after[key]
        if key == "obs":
            pd.testing.assert_frame_equal(now, value)
        elif key in ("obsm", "obsp"):
            assert now.keys() == value.keys(), key
            assert all(now[k] is value[k] for k in value), f"{key} entries were replaced"
        elif key == "selections":
            assert now.keys() == value.keys() and all(np.array_equal(now[k], value[k]) for k in value)
        elif key == "shifts":
            pd.testing.assert_frame_equal(now, value)
        elif key in ("adata", "model"):
            assert now is value, key
        else:
            assert now == value, key


#: CosMx's pixel size (micrometres) and the domain names of a CosMx-style study
COSMX_PIXEL_UM = 0.12028
COSMX_DOMAINS = {"healthy": "232_REF", "margin": "232_TVA", "tumour": "232_CRC"}


def cosmx_style(n_cells: int = 640, seed: int = 1) -> tuple[ad.AnnData, np.ndarray]:
    """A two-slide synthetic tissue laid out as a CosMx export we did not make.

    Counts in ``X`` only; coordinates only as the obs columns ``CenterX_global_px`` /
    ``CenterY_global_px`` in pixels of 0.12028 um; the domain in ``typ`` (232_REF, 232_TVA,
    232_CRC), the fine cell type in ``ist`` and the slide in ``sid``. Returns it and the
    cells' (x, y) in micrometres.
    """
    from cellina.datasets import synthetic_tissue

    tissue = synthetic_tissue(n_cells=n_cells, n_genes=100, n_slides=2, seed=seed, store_means=False)
    xy_um = np.asarray(tissue.obsm["spatial"], dtype=np.float64)
    obs = pd.DataFrame(
        {
            "CenterX_global_px": xy_um[:, 0] / COSMX_PIXEL_UM,
            "CenterY_global_px": xy_um[:, 1] / COSMX_PIXEL_UM,
            "typ": tissue.obs["domain"].astype(str).map(COSMX_DOMAINS).to_numpy(),
            "ist": tissue.obs["cell_type"].astype(str).to_numpy(),
            "sid": tissue.obs["slide"].astype(str).map({"slide_0": "S1", "slide_1": "S2"}).to_numpy(),
        },
        index=tissue.obs_names,
    )
    counts = sp.csr_matrix(tissue.layers["counts"], dtype=np.float32)
    return ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=tissue.var_names)), xy_um
