"""The world generator, its registry and its independence from the model it judges."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

import cellina.datasets
from cellina.datasets import (
    CONFIRMATION_WORLDS,
    DEVELOPMENT_WORLDS,
    EVALUATION_WORLDS,
    LOCKED_WORLDS,
    RESERVE_WORLDS,
    SEALED_WORLDS,
    VAULT_WORLDS,
    WORLD_KEY,
    Channel,
    Confounds,
    Layout,
    WorldSpec,
    list_worlds,
    make_world,
    truth_for,
    world_spec,
    world_split,
)
from cellina.datasets.worlds import COARSE_TYPES, SPLITS, spec_from_dict, spec_to_dict

ALL = {"Epithelial": 0.6, "Fibroblast": 0.8, "Endothelial": 0.7, "T_cell": 1.0, "B_cell": 0.6, "Myeloid": 1.0}
FORBIDDEN = ("cellina.spatial", "cellina.model", "cellina.counterfactual", "cellina.plugin")


def _frac(**changes) -> Channel:
    base = dict(name="frac", sensed="fraction", kernel="contact", scale=18.0, senders=("Malignant",), responders=ALL)
    return Channel(**{**base, **changes})


def _same_type_share(adata, coarse: tuple[str, ...], k: int = 6) -> float:
    """Share of the k nearest neighbours of cells of ``coarse`` that are also of ``coarse``."""
    xy = adata.obsm["spatial"]
    member = adata.obs["coarse_type"].isin(coarse).to_numpy()
    _, near = cKDTree(xy).query(xy[member], k=k + 1)
    return float(member[near[:, 1:]].mean())


# ------------------------------------------------------------------------------- generator


def test_same_seed_gives_the_same_world_and_another_seed_differs(ligand_spec):
    a, b = make_world(ligand_spec), make_world(ligand_spec)
    c = make_world(ligand_spec, seed=ligand_spec.seed + 1)
    assert (a.X != b.X).nnz == 0
    np.testing.assert_array_equal(a.obsm["spatial"], b.obsm["spatial"])
    assert a.obs.equals(b.obs) and a.var.equals(b.var)
    assert (a.X != c.X).nnz > 0 and not np.array_equal(a.obsm["spatial"], c.obsm["spatial"])


def test_layout_keys_and_counts(ligand_world, ligand_spec):
    adata = ligand_world
    assert adata.shape == (ligand_spec.n_cells, ligand_spec.n_genes)
    assert adata.obsm["spatial"].shape == (adata.n_obs, 2)
    for key in ("slide", "domain", "cell_type", "coarse_type", "cellina_true_size", "cellina_true_state"):
        assert key in adata.obs
    assert list(adata.obs["domain"].cat.categories) == ["healthy", "margin", "tumour"]
    assert list(adata.obs["slide"].cat.categories) == ["slide_0", "slide_1"]
    assert set(adata.obs["coarse_type"]) == set(COARSE_TYPES)
    truth = adata.uns[WORLD_KEY]
    assert list(truth["channel_order"]) == ["frac", "lig"] and truth["name"] == "test_ligand"
    counts = adata.layers["counts"]
    assert counts.dtype == np.float32 and (counts != adata.X).nnz == 0
    assert np.all(counts.data >= 0) and np.all(counts.data == np.round(counts.data)) and counts.nnz > 0
    # no niche reaches across slides: slides lie further apart than any reach
    xy, slide = adata.obsm["spatial"], adata.obs["slide"].cat.codes.to_numpy()
    gap = xy[slide == 1, 0].min() - xy[slide == 0, 0].max()
    assert gap > max(c["reach"] for c in truth["channels"].values())


def test_depth_sets_the_library_size(ligand_spec):
    totals = {}
    for depth in (100.0, 1000.0):
        adata = make_world(dataclasses.replace(ligand_spec, depth=depth, n_cells=1200))
        totals[depth] = float(np.median(np.asarray(adata.X.sum(axis=1)).ravel()))
        assert 0.8 * depth < totals[depth] < 1.6 * depth
    assert 7 < totals[1000.0] / totals[100.0] < 13


def test_contact_gaussian_and_exponential_kernels_give_different_niches(ligand_spec):
    sensed, layouts = {}, []
    for kernel in ("contact", "gaussian", "exponential"):
        spec = dataclasses.replace(ligand_spec, n_slides=1, channels=(_frac(kernel=kernel, scale=18.0),))
        adata = make_world(spec)
        sensed[kernel] = adata.obs["cellina_world_sensed_frac"].to_numpy()
        layouts.append((adata.obsm["spatial"], adata.obs["cell_type"].to_numpy()))
    # the same cells in the same places: only the kernel differs
    for coords, types in layouts[1:]:
        np.testing.assert_array_equal(coords, layouts[0][0])
        np.testing.assert_array_equal(types, layouts[0][1])
    for a, b in (("contact", "gaussian"), ("gaussian", "exponential"), ("contact", "exponential")):
        diff = np.abs(sensed[a] - sensed[b])
        assert diff.mean() > 0.01 and diff.max() > 0.1, (a, b)
    # reach: a contact niche of 18 um is patchier than a Gaussian of 18 um (reach ~55 um)
    assert sensed["contact"].std() > sensed["gaussian"].std()


def test_nests_and_aggregates_cluster_their_types(ligand_spec):
    plain = make_world(dataclasses.replace(ligand_spec, layout=Layout()))
    organised = make_world(dataclasses.replace(ligand_spec, layout=Layout(nests=3.0, aggregates=3.0)))
    assert _same_type_share(organised, ("Malignant",)) > _same_type_share(plain, ("Malignant",)) + 0.05
    lymph = ("T_cell", "B_cell")
    assert _same_type_share(organised, lymph) > _same_type_share(plain, lymph) + 0.05


def test_vessels_are_lines_of_endothelial_cells_denser_in_the_tumour(vessel_world):
    obs = vessel_world.obs
    vessel = obs["cellina_world_structure"].to_numpy() == 1
    assert vessel.sum() > 50
    assert set(obs["coarse_type"][vessel]) == {"Endothelial"}
    xy = vessel_world.obsm["spatial"][vessel]
    near = cKDTree(xy).query_ball_point(xy, r=20.0, return_length=True) - 1
    # a vessel cell has vessel neighbours along its line, far more than the vessel density would give
    scattered = vessel.mean() * np.pi * 20.0**2 / float(vessel_world.uns[WORLD_KEY]["spec"]["spacing"]) ** 2
    assert np.mean(near >= 1) > 0.9 and near.mean() > 1.5 > 3 * scattered
    share = obs.groupby("domain", observed=True)["cellina_world_structure"].mean()
    assert share["tumour"] > share["healthy"]


def test_gradients(vessel_world, ligand_spec):
    xy = vessel_world.obsm["spatial"]
    vessel = vessel_world.obs["cellina_world_structure"].to_numpy() == 1
    healthy = (vessel_world.obs["domain"] == "healthy").to_numpy()
    dist, _ = cKDTree(xy[vessel]).query(xy[healthy])
    hypoxia = vessel_world.obs["cellina_world_gradient"].to_numpy()[healthy]
    assert np.corrcoef(np.argsort(np.argsort(dist)), np.argsort(np.argsort(hypoxia)))[0, 1] > 0.9
    morph = make_world(
        dataclasses.replace(
            ligand_spec,
            gradient="morphogen",
            channels=(Channel("m", "gradient", "gaussian", 30.0, responders=ALL, n_genes=5),),
        )
    )
    level = morph.obs.groupby("domain", observed=True)["cellina_world_gradient"].mean()
    assert level["tumour"] > level["margin"] > level["healthy"]


def test_confounds_change_domains_without_a_niche(ligand_spec):
    none = make_world(dataclasses.replace(ligand_spec, confounds=Confounds()))
    strong = make_world(
        dataclasses.replace(ligand_spec, confounds=Confounds(subtype_shift=2.0, state_shift=0.3, size_ratio=2.0))
    )

    def by_domain(adata, column):
        return adata.obs.groupby("domain", observed=True)[column]

    def second_share(adata, coarse, domain):
        obs = adata.obs[(adata.obs["coarse_type"] == coarse) & (adata.obs["domain"] == domain)]
        return obs["cell_type"].isin(["epi_luminal", "fib_activated", "t_cd8", "macro_repair"]).mean()

    state = by_domain(strong, "cellina_true_state").mean()
    assert state["tumour"] - state["healthy"] == pytest.approx(0.3, abs=0.05)
    size = by_domain(strong, "cellina_true_size").median()
    assert size["tumour"] / size["healthy"] == pytest.approx(2.0, rel=0.15)
    plain_state = by_domain(none, "cellina_true_state").mean()
    assert abs(plain_state["tumour"] - plain_state["healthy"]) < 0.03
    for coarse in ("Fibroblast", "Myeloid"):  # the subtyped types with most cells in both domains
        assert second_share(strong, coarse, "tumour") > second_share(strong, coarse, "healthy") + 0.2
        assert abs(second_share(none, coarse, "tumour") - second_share(none, coarse, "healthy")) < 0.12


def test_slides_have_gene_wise_batch_effects(vessel_world):
    batch = vessel_world.varm["cellina_world_batch"]
    assert batch.shape == (vessel_world.n_vars, 3) and batch.std() > 0.2
    obs = vessel_world.obs
    counts = vessel_world.layers["counts"].toarray() / obs["cellina_true_size"].to_numpy()[:, None]
    epi = (obs["cell_type"] == "epi_basal").to_numpy() & (obs["domain"] == "healthy").to_numpy()
    slide = obs["slide"].cat.codes.to_numpy()
    a, b = counts[epi & (slide == 0)].mean(axis=0), counts[epi & (slide == 1)].mean(axis=0)
    ok = (a > 0.05) & (b > 0.05)
    r = np.corrcoef(np.log(b[ok] / a[ok]), batch[ok, 1] - batch[ok, 0])[0, 1]
    assert r > 0.6


def test_progress_goes_from_zero_to_one(ligand_spec):
    seen: list[float] = []
    make_world(dataclasses.replace(ligand_spec, n_cells=400), progress=lambda f, m: seen.append(f))
    assert seen[0] == 0.0 and seen[-1] == 1.0 and all(b >= a for a, b in zip(seen, seen[1:], strict=False))


# ------------------------------------------------------------------------------ specification


@pytest.mark.parametrize(
    ("make", "culprit"),
    [
        (lambda: _frac(kernel="box"), "kernel"),
        (lambda: _frac(scale=-1.0), "scale"),
        (lambda: _frac(senders=()), "senders"),
        (lambda: _frac(sensed="structure"), "senders"),
        (lambda: _frac(senders=("Microglia",)), "Microglia"),
        (lambda: _frac(responders={"Microglia": 1.0}), "Microglia"),
        (lambda: _frac(dose="step"), "dose"),
        (lambda: _frac(name="bad name"), "name"),
        (lambda: _frac(effect=(2.0, 1.0)), "effect"),
        (lambda: WorldSpec("w", "", (_frac(sensed="structure", senders=()),)), "vessels"),
        (lambda: WorldSpec("w", "", (_frac(), _frac())), "repeated"),
        (lambda: WorldSpec("w", "", (_frac(),), n_cells=50), "n_cells"),
        (lambda: WorldSpec("w", "", (_frac(),), gradient="light"), "gradient"),
        (lambda: Layout(tumour_fraction=0.9), "tumour_fraction"),
        (lambda: Confounds(size_ratio=0.0), "size_ratio"),
        (lambda: make_world("no_such_world"), "no_such_world"),
        (lambda: make_world(WorldSpec("w", "", (_frac(),)), n_genes=60), "n_genes"),
        (lambda: make_world(42), "spec_or_name"),
    ],
)
def test_bad_specifications_are_refused_by_name(make, culprit):
    with pytest.raises(ValueError, match=culprit):
        make()


def test_specification_round_trips_through_a_plain_dictionary():
    for name in list_worlds():
        spec = world_spec(name)
        assert spec_from_dict(spec_to_dict(spec)) == spec


# ------------------------------------------------------------------------------------ registry


def test_registry_splits_development_from_the_held_back_worlds():
    assert len(DEVELOPMENT_WORLDS) == 8 and len(EVALUATION_WORLDS) == 6
    assert len(CONFIRMATION_WORLDS) == 4 and len(RESERVE_WORLDS) == 4 and len(SEALED_WORLDS) == 4
    assert len(VAULT_WORLDS) == 4 and len(LOCKED_WORLDS) == 4
    splits = (DEVELOPMENT_WORLDS, EVALUATION_WORLDS, CONFIRMATION_WORLDS, RESERVE_WORLDS, SEALED_WORLDS)
    splits += (VAULT_WORLDS, LOCKED_WORLDS)
    assert len(set().union(*splits)) == sum(len(names) for names in splits)
    assert list_worlds() == [name for names in splits for name in names]
    for split, names in zip(SPLITS, splits, strict=True):
        assert list_worlds(split) == list(names)
        assert {world_split(n) for n in names} == {split}
    with pytest.raises(ValueError, match="split"):
        list_worlds("test")
    for name in list_worlds():
        spec = world_spec(name)
        assert spec.name == name and spec.description and "\n" not in spec.description
        assert 6000 <= spec.n_cells <= 12000 and 300 <= spec.n_genes <= 1000
    assert len({world_spec(n).seed for n in list_worlds()}) == len(list_worlds())


def test_evaluation_worlds_together_cover_every_factor():
    specs = [world_spec(n) for n in EVALUATION_WORLDS]
    channels = [c for s in specs for c in s.channels]
    assert {c.kernel for c in channels} == {"contact", "gaussian", "exponential"}
    assert {c.sensed for c in channels} == {"fraction", "ligand", "structure", "gradient"}
    assert {c.dose for c in channels} == {"linear", "saturating", "threshold"}
    assert {s.gradient for s in specs if any(c.sensed == "gradient" for c in s.channels)} == {"hypoxia", "morphogen"}
    reach = [c.reach for c in channels]
    assert min(reach) <= 20.0 and max(reach) >= 150.0  # a third to three times the model's ~50 um
    assert any(s.layout.nests > 0 for s in specs) and any(s.layout.aggregates > 0 for s in specs)
    assert any(s.layout.vessels > 0 for s in specs)
    assert any(s.layout.nests == s.layout.aggregates == s.layout.vessels == 0 for s in specs)
    assert any(s.confounds.subtype_shift for s in specs) and any(s.confounds.state_shift for s in specs)
    assert any(s.confounds.size_ratio != 1 for s in specs)
    assert min(s.depth for s in specs) <= 100 and max(s.depth for s in specs) >= 1000
    assert min(s.n_genes for s in specs) == 300 and max(s.n_genes for s in specs) == 1000
    assert {s.n_slides for s in specs} == {1, 2, 3}
    assert min(c.effect[1] for c in channels) < 1.0 and max(c.effect[1] for c in channels) > 2.0
    assert min(c.n_genes for c in channels) <= 6 and max(c.n_genes for c in channels) >= 30


@pytest.mark.parametrize("name", list_worlds())
def test_every_registered_world_generates_with_every_type_in_both_domains(name):
    adata = make_world(name, n_cells=3000)
    truth = truth_for(adata)
    for coarse in ("Epithelial", "Fibroblast", "Endothelial", "T_cell", "B_cell", "Myeloid"):
        in_domain = adata.obs.loc[adata.obs["coarse_type"] == coarse, "domain"].value_counts()
        assert in_domain["healthy"] > 0 and in_domain["tumour"] > 0, coarse
        assert truth.responsive(coarse).any(), coarse


# ------------------------------------------------------------------------------- independence


def _imported_modules(path: Path, package: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # a relative import, resolved against the file's package
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def test_no_module_of_datasets_imports_the_model_side():
    root = Path(cellina.datasets.__file__).parent
    files = sorted(root.rglob("*.py"))
    assert len(files) > 10
    for path in files:
        package = "cellina." + ".".join(path.parent.relative_to(root.parent).parts)
        bad = [m for m in _imported_modules(path, package) if m.startswith(FORBIDDEN)]
        assert not bad, f"{path} imports {bad}"


def test_relative_imports_are_resolved_by_the_import_check(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from ..spatial import spatial_neighbors\nfrom . import _truth\nimport cellina.model\n")
    found = _imported_modules(probe, "cellina.datasets")
    assert {"cellina.spatial.spatial_neighbors", "cellina.datasets._truth", "cellina.model"} <= found


def test_importing_and_using_datasets_loads_no_model_module():
    code = (
        "import sys\n"
        "import cellina.datasets as d\n"
        "w = d.make_world(d.world_spec('dev_two_channels'), n_cells=600, n_genes=120)\n"
        "t = d.truth_for(w)\n"
        "t.edge([0, 1], [[2, 3], [4, 5]]); t.node([0], {}); t.mean([0])\n"
        "d.synthetic_tissue(n_cells=300, n_genes=120)\n"
        f"print(sorted(m for m in sys.modules if m.startswith({FORBIDDEN!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# ------------------------------------------------------------------------------ the protocol


def test_leave_one_out_runs_on_a_world_and_scores_against_its_truth():
    from cellina.evaluation import leave_one_out

    adata = make_world("dev_two_channels", n_cells=1500, n_genes=150)
    common = dict(
        perturbations=("edge", "node"),
        bandwidth=20.0,
        max_neighbours=30,
        n_deg=20,
        n_neighbours=10,
        n_pert_genes=10,
        energy_max_cells=100,
        probes=False,
    )
    res = leave_one_out(
        adata,
        "Myeloid",
        methods=("cellina", "mean_shift"),
        model_kwargs={"n_latent": 4, "n_hidden": 16, "n_layers": 1},
        train_kwargs={"max_epochs": 2, "batch_size": 256},
        **common,
    )
    scores = res.scores.set_index(["perturbation", "method"])
    assert set(scores.index) == {(p, m) for p in ("edge", "node") for m in ("cellina", "mean_shift")}
    cols = ["truth_pearson", "truth_skill", "truth_slope", "responsive_change_true", "null_change"]
    assert np.isfinite(scores[cols].to_numpy()).all()
    responsive = truth_for(adata).responsive("Myeloid")
    true_change = res.lfc[("edge", "cellina")]["true_change"].to_numpy()
    assert np.abs(true_change[responsive]).mean() > 10 * np.abs(true_change[~responsive]).mean()
    # the exact counterfactual scores perfectly against itself
    oracle = leave_one_out(adata, "Myeloid", methods=("mean_shift", "oracle"), **common).scores
    oracle = oracle.set_index(["perturbation", "method"])
    assert oracle.loc[("edge", "oracle"), "truth_pearson"] == pytest.approx(1.0)
    assert oracle.loc[("node", "oracle"), "truth_skill"] == pytest.approx(1.0)
