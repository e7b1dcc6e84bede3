"""``grefine train-pq`` and ``grefine calibrate`` (docs/training.md): prompt learning on a planted
quality signal with the tiny CLIP, files that reload through the PQ loader and plugin with the
trained scores, resume, the loader's manifest check, threshold fits that recover planted values
(numpy, and end to end on the oracle backbone), and the one-line errors of bad input."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from grefine_core.app.cli import main  # noqa: E402
from grefine_core.errors import InputError, UsageError  # noqa: E402

FACTORS = ("overall", "technical", "rational", "natural")
#: The planted-signal training run (CLI flags shared by every run that must match).
TRAIN_FLAGS = ["--preset", "tiny", "--epochs", "24", "--patience", "24", "--lr", "0.005"]
#: Calibration tolerances (in the unit of each threshold).
P_BOUND_TOL = 0.01
TAU_TOL = 0.02


# ---------------------------------------------------------------------------- synthetic data


def _noisy_image(rng: np.random.Generator, sigma: float) -> Image.Image:
    """A 224 px image: a smooth random colour field (random content, the features' main
    variation) plus Gaussian noise of ``sigma`` (0-255: the planted quality factor)."""
    base = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
    smooth = Image.fromarray(base).resize((224, 224), Image.Resampling.BICUBIC)
    noisy = np.asarray(smooth, np.float32) + rng.normal(0, sigma, (224, 224, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def signal(tmp_path_factory) -> dict:
    """300 training/validation images and 60 held-out ones whose MOS is a planted quality
    factor, their noise: MOS = 5 - 4 sigma / 80 (AGIQA-3K layout)."""
    root = tmp_path_factory.mktemp("signal")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    rows, held = [], []
    for i in range(360):
        sigma = float(rng.uniform(0, 80))
        name = f"im{i:03d}.png"
        _noisy_image(rng, sigma).save(images / name)
        mos = round(5 - 4 * sigma / 80, 4)
        (rows if i < 300 else held).append([name, "a photo", "", "", "", mos, 0.5, 3.0, 0.5])
    header = ["name", "prompt", "adj1", "adj2", "style", "mos_quality", "std_quality"]
    header += ["mos_align", "std_align"]
    return {
        "root": root,
        "images": images,
        "csv": _write_csv(root / "data.csv", header, rows),
        "held": [(r[0], r[5]) for r in held],
        "cache": root / "features.pt",
    }


def _train(signal: dict, out: Path, *extra: str) -> int:
    args = ["train-pq", "--mos", str(signal["csv"]), "--images", str(signal["images"])]
    args += ["--out", str(out), "--cache", str(signal["cache"]), *TRAIN_FLAGS, *extra]
    return main(args)


@pytest.fixture(scope="module")
def trained(signal) -> dict:
    out = signal["root"] / "run"
    start = time.perf_counter()
    assert _train(signal, out) == 0
    seconds = time.perf_counter() - start
    manifest = json.loads((out / "manifest.json").read_text())
    return {"out": out, "manifest": manifest, "seconds": seconds}


def _pipeline(prompts: Path):
    from grefine_core import GRefine
    from grefine_core.config import load_config

    overrides = {"plugins": {"pq": {"prompts": str(prompts)}}, "select": {"alignment": "none"}}
    return GRefine(load_config(preset="tiny", environ={}, overrides=overrides))


# ---------------------------------------------------------------------------- training


def test_validation_srcc_rises_from_about_zero_to_at_least_0_6(trained, capsys):
    m = trained["manifest"]
    initial, best = m["metrics"]["initial"], m["metrics"]["best"]
    srcc0, srcc1 = initial["val"]["overall"]["srcc"], best["val"]["overall"]["srcc"]
    with capsys.disabled():
        print(
            f"\n[train-pq planted signal] validation SRCC {srcc0:.3f} -> {srcc1:.3f} (PLCC "
            f"{initial['val']['overall']['plcc']:.3f} -> {best['val']['overall']['plcc']:.3f}), "
            f"best epoch {m['training']['best_epoch']} of {m['training']['epochs_run']}, "
            f"{trained['seconds']:.1f} s in all, of which "
            f"{sum(e['seconds'] for e in m['history']):.1f} s for the epochs"
        )
    last = m["history"][-1]["val"]["overall"]["srcc"]
    assert abs(srcc0) < 0.25, f"the initialisation already ranks the images: SRCC {srcc0:.3f}"
    assert srcc1 >= 0.6 and last >= 0.6, f"validation SRCC after training {srcc1:.3f}, {last:.3f}"
    assert m["training"]["epochs_run"] == 24 and len(m["history"]) == 25
    assert m["trained_factors"] == {"overall": "mos_quality"}
    assert set(m["untrained_factors"]) == {"technical", "rational", "natural"}
    assert m["split"]["train"] == 240 and m["split"]["val"] == 60
    assert m["data"]["layout"] == "AGIQA-3K" and m["compat"] == "paper"
    assert m["backbone"]["description"].startswith("tiny random CLIP")
    assert {"grefine", "torch", "python"} <= set(m["versions"])


def test_the_text_initialisation_ranks_nothing_whatever_the_seed(trained, signal):
    """ "About 0 at initialisation" is not one lucky seed: the initial validation SRCC of the
    text initialisation for seeds 0-7, on the run's cached features and split."""
    from grefine_clip import SurgeryCLIP
    from grefine_quality.pq import PQPrompts
    from grefine_training.data import read_mos_table, split_indices
    from grefine_training.features import image_features
    from grefine_training.train import correlations, score_features, text_init

    from grefine_core.config import ImageSettings

    clip = SurgeryCLIP.tiny(0)
    table = read_mos_table(signal["csv"], signal["images"])
    feats, tokens = image_features(
        clip,
        table.files,
        compat="paper",
        image_settings=ImageSettings(),
        cache_file=signal["cache"],
    )
    srcc = []
    for seed in range(8):
        _, val = split_indices(len(table), 0.2, seed)
        emb = {
            f: PQPrompts.assemble(text_init(clip, "a good photo.", "a bad photo.", seed * 7919 + i))
            for i, f in enumerate(FACTORS)
        }
        scores, _ = score_features(clip, emb, feats[torch.from_numpy(val)], "paper", tokens)
        srcc.append(correlations(scores[:, 0], table.mos["overall"][val])["srcc"])
    assert srcc[0] == pytest.approx(trained["manifest"]["metrics"]["initial"]["score"], abs=1e-12)
    assert abs(float(np.mean(srcc))) < 0.1 and max(map(abs, srcc)) < 0.4, np.round(srcc, 3)


def test_saved_files_reload_and_give_the_trained_scores_exactly(trained, signal):
    """The files load with the PQ loader (checked against their manifest), in the released
    layout at the backbone's text width, and the real plugin path (GRefine.assess on the tiny
    preset with [plugins.pq] prompts = the folder) gives the scores training reported."""
    from grefine_quality import load_pq_prompts
    from grefine_quality.pq import sha256_of

    out = trained["out"]
    for f in FACTORS:
        params = torch.load(out / f"PQ-{f}.pth", weights_only=True)["params"]
        assert tuple(params["prompt_learner.ctx"].shape) == (2, 16, 512)
        assert tuple(params["prompt_learner.token_prefix"].shape) == (2, 1, 512)
        assert tuple(params["prompt_learner.token_suffix"].shape) == (2, 60, 512)
        assert trained["manifest"]["files"][f"PQ-{f}.pth"] == sha256_of(out / f"PQ-{f}.pth")
    prompts = load_pq_prompts(out)
    assert prompts.width == 512 and prompts.embeddings["overall"].shape == (2, 77, 512)
    rows = list(csv.DictReader(open(out / "val_scores.csv")))
    assert len(rows) == 60
    pipeline = _pipeline(out)
    for row in rows:
        result = pipeline.assess(signal["images"] / row["image"], "")
        for f in FACTORS:
            assert result.perceptual.factor_scores[f] == float(row[f]), (row["image"], f)
        assert result.p == float(row["p"]), row["image"]
    best = trained["manifest"]["metrics"]["best"]["val"]["overall"]["srcc"]
    from grefine_training.train import correlations

    srcc = correlations([float(r["overall"]) for r in rows], [float(r["mos"]) for r in rows])
    assert srcc["srcc"] == pytest.approx(best, abs=1e-12)


def test_the_learned_prompts_rank_held_out_images(trained, signal, capsys):
    """Images the run never saw, scored by the plugin with the trained files."""
    from grefine_training.train import correlations

    pipeline = _pipeline(trained["out"])
    scores = [pipeline.assess(signal["images"] / n, "").p for n, _ in signal["held"]]
    srcc = correlations(scores, [m for _, m in signal["held"]])["srcc"]
    with capsys.disabled():
        print(f"\n[train-pq planted signal] held-out SRCC of p (plugin path): {srcc:.3f}")
    assert srcc >= 0.5, f"held-out SRCC {srcc:.3f}"


def test_a_resumed_run_equals_an_uninterrupted_one(trained, signal, tmp_path):
    out = tmp_path / "resumed"
    assert _train(signal, out, "--stop-after", "9") == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 9 and not (out / "PQ-overall.pth").exists()
    assert _train(signal, out) == 0  # the same command continues from epoch 9
    whole = trained["out"]
    for f in FACTORS:
        a = torch.load(whole / f"PQ-{f}.pth", weights_only=True)["params"]
        b = torch.load(out / f"PQ-{f}.pth", weights_only=True)["params"]
        for key in a:
            assert torch.equal(a[key], b[key]), (f, key)
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    mine = json.loads((out / "manifest.json").read_text())
    assert strip(mine["history"]) == strip(trained["manifest"]["history"])
    assert (out / "val_scores.csv").read_text() == (whole / "val_scores.csv").read_text()
    # A checkpoint of other settings is refused, naming what differs.
    assert _train(signal, out, "--lr", "0.01") == 2


def test_early_stopping_keeps_the_best_epoch(signal, tmp_path):
    out = tmp_path / "early"
    assert _train(signal, out, "--patience", "2") == 0
    m = json.loads((out / "manifest.json").read_text())
    t = m["training"]
    assert t["stopped_early"] and t["epochs_run"] < 24 and t["best_epoch"] == t["epochs_run"] - 2
    scores = [e["score"] for e in m["history"]]
    assert scores[t["best_epoch"]] == max(scores)
    best = torch.load(out / "checkpoint.pt", weights_only=True)["best_ctx"]["overall"]
    saved = torch.load(out / "PQ-overall.pth", weights_only=True)["params"]["prompt_learner.ctx"]
    assert torch.equal(best, saved)


def test_a_checkpoint_of_another_run_is_refused(signal, tmp_path, capsys):
    out = tmp_path / "other"
    assert _train(signal, out, "--stop-after", "1") == 0
    capsys.readouterr()
    assert _train(signal, out, "--batch-size", "16") == 2
    err = capsys.readouterr().err
    assert "another training run" in err and "batch_size" in err and "--restart" in err
    assert len(err.strip().splitlines()) == 1


def test_factor_columns_train_their_own_prompts(signal, tmp_path):
    """A table with a technical column trains the technical prompt too; the factors without a
    column get a copy of the trained overall prompt, or their initial prompt."""
    from grefine_clip import SurgeryCLIP
    from grefine_training.train import text_init

    rows = list(csv.reader(open(signal["csv"])))
    header, body = rows[0], rows[1:]
    table = _write_csv(
        tmp_path / "factors.csv",
        [*header, "mos_technical"],
        [[*r, round(6 - float(r[5]), 4)] for r in body],  # a factor that disagrees with overall
    )
    load = lambda d, f: torch.load(d / f"PQ-{f}.pth", weights_only=True)["params"]  # noqa: E731
    for policy in ("overall", "init"):
        out = tmp_path / policy
        args = ["train-pq", "--mos", str(table), "--images", str(signal["images"])]
        args += ["--out", str(out), "--cache", str(signal["cache"]), "--preset", "tiny"]
        assert main([*args, "--epochs", "2", "--untrained-factors", policy]) == 0
        m = json.loads((out / "manifest.json").read_text())
        assert m["trained_factors"] == {"overall": "mos_quality", "technical": "mos_technical"}
        assert set(m["metrics"]["best"]["val"]) == {"overall", "technical"}
        ctx = {f: load(out, f)["prompt_learner.ctx"] for f in FACTORS}
        assert not torch.equal(ctx["technical"], ctx["overall"])
        if policy == "overall":
            assert torch.equal(ctx["rational"], ctx["overall"])
            assert m["untrained_factors"]["natural"] == "copy of overall"
        else:
            init = text_init(SurgeryCLIP.tiny(0), "a good photo.", "a bad photo.", 2)
            assert torch.equal(ctx["rational"], init["prompt_learner.ctx"])  # seed 0 * 7919 + 2


def test_train_pq_can_start_from_the_released_files(signal, pq_embeddings_dir, tmp_path):
    out = tmp_path / "released"
    args = ["--init", "released", "--init-from", str(pq_embeddings_dir), "--epochs", "1"]
    args += ["--untrained-factors", "init"]
    cmd = ["train-pq", "--mos", str(signal["csv"]), "--images", str(signal["images"])]
    cmd += ["--out", str(out), "--cache", str(signal["cache"]), "--preset", "tiny"]
    assert main([*cmd, *args]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["init"]["init"] == "released"
    raw = torch.load(pq_embeddings_dir / "PQ-natural.pth", weights_only=True)["params"]
    mine = torch.load(out / "PQ-natural.pth", weights_only=True)["params"]
    assert all(torch.equal(mine[k], raw[k]) for k in raw)  # untrained: the released prompt


def test_the_loader_checks_trained_files_against_their_manifest(trained, tmp_path):
    import shutil

    from grefine_quality import load_pq_prompts

    folder = tmp_path / "copy"
    shutil.copytree(trained["out"], folder, ignore=shutil.ignore_patterns("*.pt"))
    load_pq_prompts(folder)  # a copy is fine
    data = bytearray((folder / "PQ-natural.pth").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "PQ-natural.pth").write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"PQ-natural\.pth.*sha256.*its manifest.*records"):
        load_pq_prompts(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(InputError, match=r"re-download.*manifest\.json beside them: none here"):
        load_pq_prompts(folder)
    (folder / "manifest.json").write_text('{"kind": "something else", "files": {}}')
    with pytest.raises(InputError, match="not a grefine train-pq manifest"):
        load_pq_prompts(folder)


def test_text_initialisation_is_in_the_released_layout():
    from grefine_clip import SurgeryCLIP
    from grefine_quality.pq import PQPrompts
    from grefine_training.train import split_embeddings, text_init

    clip = SurgeryCLIP.tiny(0)
    params = text_init(clip, "a good photo.", "a bad photo.", seed=0)
    table = clip.prompt_text.text.token_embedding.weight.detach()
    ids = [clip.tokenize([t])[0] for t in ("a good photo.", "a bad photo.")]
    for row, tok in enumerate(ids):  # [SOT, a, good|bad, photo, ., EOT, 0...]
        suffix = params["prompt_learner.token_suffix"][row]
        assert torch.equal(params["prompt_learner.token_prefix"][row, 0], table[tok[0]])
        assert torch.equal(params["prompt_learner.ctx"][row, 7], table[tok[1]])  # "a"
        assert torch.equal(suffix[:3], table[tok[2:5]])  # class tokens: good|bad photo .
        assert torch.equal(suffix[3], table[tok[5]])  # the end-of-text
        assert torch.equal(suffix[4:], table[0].expand(56, -1))  # padding
    emb = PQPrompts.assemble(params)
    assert emb.shape == (2, 77, 512) and torch.equal(
        emb[:, 20], params["prompt_learner.token_suffix"][:, 3]
    )
    back = split_embeddings(emb)
    assert all(torch.equal(back[k], params[k]) for k in params)
    with pytest.raises(UsageError, match="3 to 11 tokens"):
        text_init(clip, "good", "bad", seed=0)


def test_released_files_initialise_exactly(pq_embeddings_dir, tmp_path):
    from grefine_clip import SurgeryCLIP
    from grefine_training.train import TrainOptions, initial_params

    params, info = initial_params(
        SurgeryCLIP.tiny(0), TrainOptions(init="released", init_from=str(pq_embeddings_dir))
    )
    for f in FACTORS:
        raw = torch.load(pq_embeddings_dir / f"PQ-{f}.pth", weights_only=True)["params"]
        assert all(torch.equal(params[f][k], raw[k].float()) for k in raw)
    assert info["init"] == "released" and set(info["files"]) == set(FACTORS)


def test_released_files_are_never_overwritten(signal, pq_embeddings_dir, tmp_path, capsys):
    import shutil

    folder = tmp_path / "released"
    shutil.copytree(pq_embeddings_dir, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    args = ["train-pq", "--mos", str(signal["csv"]), "--images", str(signal["images"])]
    assert main([*args, "--out", str(folder), "--preset", "tiny"]) == 2
    assert "train-pq did not write" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_the_oracle_serves_calibrate_only(signal, capsys):
    args = ["train-pq", "--mos", str(signal["csv"]), "--images", str(signal["images"])]
    assert main([*args, "--out", str(signal["root"] / "oracle"), "--preset", "oracle"]) == 2
    assert "it serves `grefine calibrate` only" in capsys.readouterr().err


# ---------------------------------------------------------------------------- bad input


@pytest.fixture
def small(tmp_path) -> dict:
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        _noisy_image(np.random.default_rng(i), 10.0).resize((32, 32)).save(images / f"ok{i}.png")
    return {"root": tmp_path, "images": images}


def _run(command: str, table: Path, images: Path, *extra: str) -> int:
    out = table.parent / "out"
    return main([command, "--mos", str(table), "--images", str(images), "--out", str(out), *extra])


def test_missing_image_files_are_listed_with_the_count(small, capsys):
    rows = [[f"ok{i}.png", 3.0] for i in range(3)] + [[f"gone{i}.png", 2.0] for i in range(7)]
    table = _write_csv(small["root"] / "t.csv", ["Image", "MOS"], rows)
    assert _run("train-pq", table, small["images"], "--preset", "tiny") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "7 of 10 images named in column 'Image'" in err
    assert (
        "gone0.png, gone1.png, gone2.png, gone3.png, gone4.png, ..." in err and "gone5" not in err
    )


def test_a_non_number_mos_names_the_row(small, capsys):
    rows = [["ok0.png", 3.0], ["ok1.png", "n/a"], ["ok2.png", 4.0]]
    table = _write_csv(small["root"] / "t.csv", ["Image", "MOS"], rows)
    assert _run("calibrate", table, small["images"]) == 2
    err = capsys.readouterr().err
    assert "line 3 (image 'ok1.png'): column 'MOS' is 'n/a', not a finite number" in err


def test_an_empty_split_is_refused(small, capsys):
    rows = [[f"ok{i}.png", float(i)] for i in range(3)]
    table = _write_csv(small["root"] / "t.csv", ["Image", "MOS"], rows)
    assert _run("train-pq", table, small["images"], "--val-fraction", "0.1") == 2
    assert "the validation split is empty" in capsys.readouterr().err
    from grefine_training.data import split_indices

    with pytest.raises(UsageError, match="training split is empty"):
        split_indices(3, 0.9, 0)
    train, val = split_indices(10, 0.2, 0)
    assert len(val) == 2 and len(train) == 8 and not set(train) & set(val)
    assert np.array_equal(split_indices(10, 0.2, 0)[1], val)  # seeded


def test_layouts_are_recognised_by_their_column_names(small):
    from grefine_training.data import read_mos_table

    header = ["name", "prompt", "adj1", "adj2", "style", "mos_quality", "std_quality"]
    rows = [[f"ok{i}.png", "a cat", "", "", "", 2.0 + i, 0.1, 3.0, 0.2] for i in range(3)]
    agiqa = read_mos_table(
        _write_csv(small["root"] / "a.csv", [*header, "mos_align", "std_align"], rows),
        small["images"],
    )
    assert agiqa.layout.name == "AGIQA-3K" and agiqa.layout.align_col == "mos_align"
    assert agiqa.prompts == ["a cat"] * 3 and list(agiqa.mos["overall"]) == [2.0, 3.0, 4.0]
    twenty = _write_csv(small["root"] / "b.csv", ["Image", "MOS", "Technical"], [["ok0.png", 1, 2]])
    t = read_mos_table(twenty, small["images"])
    assert t.layout.name == "AIGIQA-20K" and t.layout.factor_cols == {"technical": "Technical"}
    custom = _write_csv(small["root"] / "c.csv", ["file", "score"], [["ok1.png", 3.5]])
    with pytest.raises(UsageError, match="match no known layout.*--image-col and --mos-col"):
        read_mos_table(custom, small["images"])
    c = read_mos_table(custom, small["images"], image_col="file", mos_col="score")
    assert c.layout.name == "custom" and c.files == [small["images"] / "ok1.png"]
    with pytest.raises(UsageError, match="--mos-col 'quality'.*columns are file, score"):
        read_mos_table(custom, small["images"], image_col="file", mos_col="quality")
    dup = _write_csv(small["root"] / "d.csv", ["Image", "MOS"], [["ok0.png", 1], ["ok0.png", 2]])
    with pytest.raises(InputError, match="line 3: image 'ok0.png' is listed again"):
        read_mos_table(dup, small["images"])


def test_commands_are_registered():
    from grefine_core.app.cli import plugin_commands

    assert {"train-pq", "calibrate"} <= set(plugin_commands())
    assert main(["train-pq", "--help"]) == 0 and main(["calibrate", "--help"]) == 0


# ---------------------------------------------------------------------------- calibrate


def test_fit_score_bound_recovers_a_planted_bound():
    from grefine_training.calibrate import fit_score_bound

    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 1, 4000)
    labels = scores >= 0.72
    flip = rng.uniform(size=scores.size) < 0.05  # 5% label noise
    fit = fit_score_bound(scores, labels ^ flip)
    assert abs(fit.value - 0.72) < 0.02 and fit.balanced_accuracy > 0.9
    clean = fit_score_bound(scores, labels)
    assert clean.tied[0] < 0.72 <= clean.tied[1] and clean.balanced_accuracy == 1.0


def test_fit_region_tau_recovers_a_planted_tau():
    from grefine_training.calibrate import TAU_BINS, fit_region_tau

    rng = np.random.default_rng(1)
    q = rng.beta(2, 3, 200_000)
    region = q > 0.38
    region ^= rng.uniform(size=q.size) < 0.03
    idx = np.minimum((q * TAU_BINS).astype(int), TAU_BINS - 1)
    fit = fit_region_tau(
        np.bincount(idx[region], minlength=TAU_BINS), np.bincount(idx[~region], minlength=TAU_BINS)
    )
    assert abs(fit.value - 0.38) < 0.01


def test_fit_beta_recovers_a_planted_beta():
    from grefine_training.calibrate import alignment_scores, fit_beta

    rng = np.random.default_rng(2)
    prompt_scores = rng.uniform(0.5, 1.0, 300)
    phrases = [rng.uniform(0.1, 0.9, rng.integers(1, 4)) for _ in range(300)]
    mos = 1 + 4 * alignment_scores(prompt_scores, phrases, 0.6)
    fit = fit_beta(prompt_scores, phrases, mos)
    assert abs(fit.value - 0.6) <= 0.04 and fit.balanced_accuracy > 0.99


def test_hq_spec():
    from grefine_training.calibrate import hq_labels

    mos = np.arange(100.0)
    labels, what = hq_labels(mos, "20%", "MOS", "--hq-mos")
    assert labels.sum() == 20 and "top 20%" in what
    assert hq_labels(mos, "90", "MOS", "--hq-mos")[0].sum() == 10
    for bad in ("0%", "abc", "1000"):
        with pytest.raises(UsageError, match="--hq-mos"):
            hq_labels(mos, bad, "MOS", "--hq-mos")


def _oracle_quality(sigma: float) -> float:
    """The oracle's planted p of a patch (or a class token) of noise ``sigma``, with the paper
    preset's cask (the oracle plants one good/bad pair for all four factors)."""
    from grefine_clip.oracle import QUALITY_LOGIT, SIGMA_BAD
    from grefine_quality.constants import PAPER_CASK_BOUNDS
    from grefine_quality.ops import cask_score

    badness = min(sigma / SIGMA_BAD, 1.0)
    q = 1.0 / (1.0 + math.exp(-QUALITY_LOGIT * (1.0 - 2.0 * badness)))
    return cask_score(dict.fromkeys(FACTORS, q), PAPER_CASK_BOUNDS)


def test_calibrate_on_the_oracle_recovers_planted_thresholds(tmp_path, capsys):
    """Grey 224 px images whose four quadrants carry Gaussian noise; the worst quadrant's noise
    sets the MOS. Planted: "high quality" = MOS >= 4.04 (noise <= 6), so p_bound should be the
    oracle's p at noise 6; a quadrant is to refine when its noise exceeds 7, so tau should be
    1 - P at noise 7."""
    from grefine_core.config import load_config

    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(2)
    rows, half = [], 112
    for i in range(30):
        worst = rng.uniform(2, 12)
        sigmas = np.r_[worst, rng.uniform(0, worst, 3)]
        rng.shuffle(sigmas)
        pixels = np.full((224, 224, 3), 128.0)
        mask = np.zeros((224, 224), np.uint8)
        for k, (y, x) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            box = (slice(y * half, (y + 1) * half), slice(x * half, (x + 1) * half))
            pixels[box] += rng.normal(0, sigmas[k], (half, half, 3))
            mask[box] = 255 if sigmas[k] > 7 else 0
        Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8)).save(images / f"c{i}.png")
        Image.fromarray(mask).save(masks / f"c{i}.png")
        rows.append([f"c{i}.png", round(5 - 4 * worst / 25, 4)])
    table = _write_csv(tmp_path / "mos.csv", ["Image", "MOS"], rows)
    out = tmp_path / "fitted.toml"
    args = ["calibrate", "--mos", str(table), "--images", str(images), "--masks", str(masks)]
    args += ["--preset", "oracle", "--set", "plugins.mask_paper.dilate_px=2", "--hq-mos", "4.04"]
    args += ["--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    cfg = load_config(config_file=out, environ={})
    p_bound, tau = cfg.hq_skip.p_bound, cfg.plugins["mask_paper"]["tau"]
    planted_p, planted_tau = _oracle_quality(6.0), 1.0 - _oracle_quality(7.0)
    assert abs(p_bound - planted_p) <= P_BOUND_TOL, (p_bound, planted_p)
    assert abs(tau - planted_tau) <= TAU_TOL, (tau, planted_tau)
    assert cfg.preset == "oracle" and "hq_skip.p_bound" in printed
    assert cfg.plugins["mask_paper"]["dilate_px"] == 2  # the run's own settings are kept
    text = out.read_text()
    assert text.startswith("# grefine calibrate: thresholds fitted on 30 images")
    assert "not fitted: plugins.aq.beta, hq_skip.a_bound: no alignment MOS column" in text
    assert main(args) == 0  # its own file is rewritten
    foreign = tmp_path / "mine.toml"
    foreign.write_text('preset = "paper"\n')
    assert main([*args[:-1], str(foreign)]) == 2
    assert foreign.read_text() == 'preset = "paper"\n'


def test_calibrate_fits_beta_and_the_a_bound_with_an_alignment_column(tmp_path):
    """Oracle scenes of one ball in four colours, prompt "a red ball": the alignment MOS is high
    for the red ones (AGIQA-3K layout, which names its alignment column mos_align)."""
    from grefine_clip.oracle_scenes import Shape, draw_scene

    from grefine_core.config import load_config

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(3)
    rows = []
    for i in range(12):
        colour = ("red", "green", "blue", "yellow")[i % 4]
        sigma = float(rng.uniform(0, 12))
        draw_scene((Shape("ball", colour, (128, 128), 110),), 256, (0, 0, 256, 256), sigma, i).save(
            images / f"a{i}.png"
        )
        align = (4.5 if colour == "red" else 1.5) + float(rng.normal(0, 0.2))
        rows.append([f"a{i}.png", "a red ball", round(5 - 4 * sigma / 25, 3), round(align, 3)])
    table = _write_csv(tmp_path / "data.csv", ["name", "prompt", "mos_quality", "mos_align"], rows)
    out = tmp_path / "fitted.toml"
    args = ["calibrate", "--mos", str(table), "--images", str(images), "--preset", "oracle"]
    assert main([*args, "--hq-align-mos", "3", "--out", str(out)]) == 0
    cfg = load_config(config_file=out, environ={})
    red = [i for i in range(12) if i % 4 == 0]
    assert 0 < cfg.plugins["aq"]["beta"] <= 1.0
    assert 0 < cfg.hq_skip.a_bound < 1.0 and "plugins.aq.beta" in out.read_text()
    from grefine_core import GRefine

    pipeline = GRefine(cfg)
    a = [pipeline.assess(images / f"a{i}.png", "a red ball").a for i in range(12)]
    assert all((a[i] >= cfg.hq_skip.a_bound) == (i in red) for i in range(12)), a
