"""Evaluation.py and HeadNeRF.evaluation: pairs, metrics on known inputs, end to end, resume, bad input.

A tiny NeRF (4 training steps at 16 px) and an untrained 16-px estimator stand in for the real
models: the tests check the protocol's bookkeeping, not the numbers' quality.
"""

import json
import math
import os
import re
import shutil

import h5py
import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, tiny_config_dict

# ------------------------------------------------------------------------------------ fixtures

def _save_estimator(path: str, input_size: int) -> str:
    from HeadNeRF.checkpoint import save_checkpoint
    from HeadNeRF.estimator import OUTPUT_NAMES, GazeEstimator

    torch.manual_seed(0)
    model = GazeEstimator(18, input_size, "small")  # untrained: the tests check bookkeeping, not accuracy
    meta = {"depth": 18, "input_size": input_size, "stem": "small", "mean": [0.5] * 3, "std": [0.25] * 3,
            "outputs": list(OUTPUT_NAMES)}
    save_checkpoint({"model": model.state_dict(), "config": {"steps": 0}, "estimator": meta, "step": 0}, path)
    return path


@pytest.fixture(scope="module")
def models(tiny_dataset, tmp_path_factory):
    """(NeRF run dir, 16-px estimator .pt, 32-px estimator .pt)."""
    from HeadNeRF.config import TrainConfig, from_dict
    from HeadNeRF.training import train

    d = tmp_path_factory.mktemp("eval_models")
    run = str(d / "nerf")
    train(from_dict(TrainConfig, tiny_config_dict(tiny_dataset, run, steps=2)), progress=False)
    return run, _save_estimator(str(d / "est16.pt"), 16), _save_estimator(str(d / "est32.pt"), 32)


def base_config(dataset_dir: str, models, results_dir: str, **over) -> dict:
    run, est, _ = models
    cfg = {"checkpoint": run, "estimator_checkpoint": est, "dataset_dir": dataset_dir, "results_dir": results_dir,
           "pairs_per_subject": 4, "inputs_per_subject": 2, "seed": 3, "finetune_steps": 1, "num_threads": 1,
           "fit": {"steps": 2, "rays_per_step": 0, "early_stop_patience": 0},
           "metrics": {"identity": False}, "grid_pairs": 2,
           "controllability": {"inputs_per_subject": 1, "resolution": [2, 2]}}
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return cfg


def _text(path: str) -> str:
    with open(path) as f:
        return f.read()


def _json(path: str):
    return json.loads(_text(path))


def _jsonl(path: str) -> list:
    return [json.loads(line) for line in _text(path).splitlines()]


def run_cli(write_config, cfg: dict, *extra) -> int:
    import Evaluation

    return Evaluation.main(["--config_file_path", write_config(cfg), "--no-progress", *extra])


# ---------------------------------------------------------------------------------------- pairs

def test_pairs_are_deterministic_for_a_seed(tiny_dataset, tmp_path):
    from HeadNeRF.evaluation.pairs import (
        generate_pairs,
        load_pairs_file,
        read_subject_rows,
        write_pairs_file,
    )

    rows = [read_subject_rows(tiny_dataset, 1)]
    a = generate_pairs(rows, 6, 2, seed=7)
    assert a == generate_pairs(rows, 6, 2, seed=7)
    assert a != generate_pairs(rows, 6, 2, seed=8)
    assert len(a) == 6 and len({p.input_row for p in a}) == 2  # inputs are shared: each is fitted once
    r = rows[0]
    for p in a:
        assert r.valid[p.input_row] and r.valid[p.target_row]
        assert r.frames[p.input_row] != r.frames[p.target_row]  # another gaze
    same = generate_pairs(rows, 4, 0, seed=1, same_camera=True)
    assert len({p.input_row for p in same}) == 4  # inputs_per_subject 0: one input per pair (GazeNeRF)
    assert all(r.cams[p.input_row] == r.cams[p.target_row] for p in same)
    path = str(tmp_path / "pairs.txt")
    write_pairs_file(path, a, header="test")
    assert load_pairs_file(path, {1: r}) == a


# -------------------------------------------------------------------------------------- metrics

def test_metrics_on_known_inputs():
    from HeadNeRF.evaluation import metrics as M

    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 16, 16, generator=g)
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 4:12, 4:12] = 1
    same = M.image_metrics(img, img, mask)
    assert torch.isinf(same["psnr"]).all() and torch.isinf(same["psnr_head"]).all()
    assert torch.allclose(same["ssim"], torch.ones(2, dtype=torch.float64)) and (same["l1"] == 0).all()
    shifted = img.clone()
    shifted[:, :, 4:12, 4:12] = (img[:, :, 4:12, 4:12] + 0.1).clamp(max=1.0)  # change only inside the mask
    inside = (shifted - img)[:, :, 4:12, 4:12]
    m = M.image_metrics(shifted, img, mask)
    expect_head = -10 * torch.log10(inside.double().square().flatten(1).mean(1))
    assert torch.allclose(m["psnr_head"], expect_head, atol=1e-6)
    assert (m["psnr"] > m["psnr_head"]).all()  # the unchanged outside pixels count in the whole-image PSNR
    assert torch.isnan(M.image_metrics(img, img, torch.zeros_like(mask))["psnr_head"]).all()
    const = M.image_metrics(torch.full((1, 3, 8, 8), 0.6), torch.full((1, 3, 8, 8), 0.5), torch.ones(1, 1, 8, 8))
    assert math.isclose(float(const["psnr"]), 20.0, abs_tol=1e-4) and math.isclose(float(const["l1"]), 0.1, abs_tol=1e-6)


def test_one_head_psnr_for_training_fit_and_evaluation():
    """The evaluation's psnr_head is HeadNeRF.metrics.masked_psnr (bit for bit); identical -> inf, empty -> NaN."""
    from HeadNeRF.evaluation import metrics as M
    from HeadNeRF.metrics import masked_psnr

    g = torch.Generator().manual_seed(1)
    pred, target = torch.rand(3, 3, 8, 8, generator=g), torch.rand(3, 3, 8, 8, generator=g)
    mask = (torch.rand(3, 1, 8, 8, generator=g) > 0.5).float()
    mask[2] = 0
    ours = masked_psnr(pred.double(), target.double(), mask.double())
    assert torch.equal(M.image_metrics(pred, target, mask)["psnr_head"][:2], ours[:2]) and torch.isnan(ours[2])
    by_hand = -10 * math.log10(float(((pred[0] - target[0]).square() * mask[0]).sum() / (3 * mask[0].sum())))
    assert math.isclose(float(masked_psnr(pred, target, mask)[0]), by_hand, rel_tol=1e-5)
    assert torch.isinf(masked_psnr(pred, pred, mask)[:2]).all()  # identical images: +inf dB, not a capped number
    with pytest.raises(ValueError, match=r"\(B, C, H, W\).*\(3, 3, 8, 8\) and \(3, 8, 8\)"):
        masked_psnr(pred, target[0])
    assert math.isclose(M.angle_error_deg([0.0, 0.0], [0.0, math.radians(10)]), 10.0, abs_tol=1e-6)
    assert math.isnan(M.angle_error_deg([0.0, 0.0], None))
    e = np.random.default_rng(0).normal(size=128)
    assert math.isclose(M.identity_similarity(e, e), 100.0) and math.isclose(M.identity_similarity(e, -e), -100.0)
    feats = np.random.default_rng(1).normal(size=(6, 4))
    assert abs(M.fid_from_features(feats, feats)) < 1e-6 and M.fid_from_features(feats, feats + 3) > 1
    assert M.build_lpips("alex", "")[0] is None and "skipped" in M.build_lpips("alex", "")[1]
    fn, why = M.build_lpips("alex", "/nonexistent/alexnet.pth")
    assert fn is None and "not found" in why
    assert M.build_fid_features("torchvision", "")[0] is None


def test_lpips_with_given_backbone_weights(tmp_path):
    import torchvision

    from HeadNeRF.evaluation import metrics as M

    path = str(tmp_path / "alexnet.pth")
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    fn, why = M.build_lpips("alex", path)
    assert fn is not None, why
    a = torch.rand(1, 3, 16, 16)
    assert float(fn(a, a)) == 0.0 and float(fn(a, 1 - a)) > 0
    bad = str(tmp_path / "bad.pth")
    torch.save({"x": torch.zeros(1)}, bad)
    assert M.build_lpips("alex", bad)[0] is None


def test_fid_inception_loader(tmp_path):
    import torchvision

    from HeadNeRF.evaluation import metrics as M

    path = str(tmp_path / "inception.pth")
    torch.save(torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), path)
    fe, why = M.build_fid_features("torchvision", path)
    assert fe is not None and "not comparable" in why
    assert fe(torch.rand(1, 3, 16, 16)).shape == (1, 2048)
    assert M.build_fid_features("torchvision", str(tmp_path / "missing.pth"))[0] is None
    fe, why = M.build_fid_features("torch_fidelity", path)  # the standard FID needs torch-fidelity (not installed)
    assert fe is None and "skipped" in why


# ------------------------------------------------------------------------------------ end to end

def test_evaluation_end_to_end_writes_every_output(tiny_dataset, models, tmp_path, write_config, monkeypatch):
    from HeadNeRF.evaluation import metrics as M

    # FID plumbing (per-pair features on disk -> torchmetrics) with a small stand-in feature extractor: the
    # 2048-d Inception FID costs ~10 s of eigen-decomposition per value on one core (its loader is tested below).
    fid_w = str(tmp_path / "fid_weights.pth")
    torch.save({}, fid_w)
    pool = torch.nn.AdaptiveAvgPool2d(4)
    monkeypatch.setattr(M, "build_fid_features", lambda backbone, path, device="cpu": (
        M.FIDFeatures(torch.nn.Sequential(pool, torch.nn.Flatten()), "stand-in", device),
        "FID with a stand-in extractor: not comparable with published FIDs"))
    monkeypatch.setattr(M.FIDFeatures, "__call__", lambda self, image: self.model(image.float()).double().numpy())
    out = str(tmp_path / "res")
    cfg = base_config(tiny_dataset, models, out, pairs_per_subject=3,
                      metrics={"identity": True, "identity_size": 64, "fid_weights": fid_w})
    assert run_cli(write_config, cfg) == 0
    for name in ("per_pair.jsonl", "metrics.json", "report.md", "pairs.txt", "grid.png", "gaze_error_vs_redirection.png",
                 "controllability.png", "controllability.json"):
        assert os.path.isfile(os.path.join(out, name)), name
    result = _json(os.path.join(out, "metrics.json"))
    recs = _jsonl(os.path.join(out, "per_pair.jsonl"))
    assert len(recs) == 3 == result["aggregate"]["overall"]["pairs"]
    assert len(result["sha256"]["checkpoint"]) == 64 and result["config"]["finetune_steps"] == 1
    o = result["aggregate"]["overall"]
    for c in ("codes", "finetune", "copy_input"):
        for k in ("gaze_err_est", "gaze_err_label", "head_err_est", "ssim", "psnr", "id_sim", "fid"):
            assert isinstance(o[c][k], float), (c, k)
        assert o[c]["lpips"] is None  # skipped, not made up
    assert "skipped" in result["metric_notes"]["lpips"] and "not comparable" in result["metric_notes"]["fid"]
    assert result["controllability"]["mean_deg"] >= 0 and len(result["controllability"]["mean_map_deg"]) == 2
    # the floor is the estimator on the target against its label; the copy baseline scores the input image
    from HeadNeRF.data.dataset import GazeDataset
    from HeadNeRF.evaluation.metrics import (
        angle_error_deg,
        image_metrics,
        whiten_background,
    )

    ds = GazeDataset(tiny_dataset, which="all", subjects=[1], image_size=16)
    idx = {(r.subject, r.row): i for i, r in enumerate(ds.rows)}
    r0 = recs[0]
    tgt, inp = ds[idx[(1, r0["target_row"])]], ds[idx[(1, r0["input_row"])]]
    assert math.isclose(r0["floor"]["gaze_err_label"], angle_error_deg(r0["target_read"]["gaze"], tgt["gaze"].tolist()),
                        rel_tol=1e-6)
    def white(item):
        return whiten_background(item["image"][None], item["head_mask"][None])

    ref = image_metrics(white(inp), white(tgt), tgt["head_mask"][None])
    assert math.isclose(r0["copy_input"]["psnr"], float(ref["psnr"][0]), rel_tol=1e-9)
    assert r0["requested_from"] == "label" and r0["requested_gaze"] == pytest.approx(tgt["gaze"].tolist())
    from HeadNeRF.evaluation.readout import view_bin, view_yaw_deg

    assert r0["target_view"] == view_bin(float(view_yaw_deg(tgt["R_w2c"], tgt["t_w2c"])))  # the target's camera, not the input's
    assert sum(v["pairs"] for v in result["aggregate"]["per_target_view"].values()) == 3
    report = _text(os.path.join(out, "report.md"))
    assert "NOT the same data" in report and "GazeGaussian" in report and "copy the input" in report
    assert report.index("## Results") < report.index("NOT the same data")
    # no-redirection rows: the same fit from the target camera, the input's eye-in-head gaze kept
    for c in ("codes_no_redirection", "finetune_no_redirection"):
        assert isinstance(o[c]["gaze_err_label"], float) and c in r0
    assert "no redirection: codes fit" in report and "vs **no redirection**" in report
    # identity reference rows: the same subject from the target camera, and another subject from that camera
    ref = r0["id_reference"]
    from HeadNeRF.evaluation.pairs import read_subject_rows

    rows = {s: read_subject_rows(tiny_dataset, s) for s in (0, 1)}
    assert ref["same_subject"]["subject"] == 1 and ref["other_subject"]["subject"] == 0
    for k in ("same_subject", "other_subject"):
        s, row = ref[k]["subject"], ref[k]["row"]
        assert rows[s].cams[row] == rows[1].cams[r0["target_row"]]
    assert rows[1].frames[ref["same_subject"]["row"]] != rows[1].frames[r0["target_row"]]
    agg_ref = o["id_reference"]
    assert isinstance(agg_ref["same_subject"], float) and isinstance(agg_ref["other_subject"], float)
    assert "ID reference: **another subject**, target camera" in report
    assert ("not informative on this data" in report) != agg_ref["informative"]
    assert "Each input's fit starts from the checkpoint's mean latent code" in report
    assert "ignoring the request" in report


def test_killed_and_rerun_continues_and_equals_an_uninterrupted_run(tiny_dataset, models, tmp_path, write_config):
    full = str(tmp_path / "full")
    assert run_cli(write_config, base_config(tiny_dataset, models, full), "--max_new_pairs", "100") == 0
    part = str(tmp_path / "part")
    cfg = base_config(tiny_dataset, models, part)
    assert run_cli(write_config, cfg, "--max_new_pairs", "2") == 0
    assert not os.path.exists(os.path.join(part, "metrics.json")) and not os.path.exists(os.path.join(part, "report.md"))
    log = os.path.join(part, "per_pair.jsonl")
    first = _text(log).splitlines()
    assert len(first) == 2
    with open(log, "a") as f:  # a kill in the middle of writing the third record
        f.write('{"pair": 2, "key": "torn')
    assert run_cli(write_config, cfg) == 0
    lines = _text(log).splitlines()
    assert lines[:2] == first and len(lines) == 4  # the finished pairs were not redone, the torn line dropped
    a, b = _json(os.path.join(full, "metrics.json")), _json(os.path.join(part, "metrics.json"))
    assert a["aggregate"] == b["aggregate"] and a["controllability"] == b["controllability"]
    def records(path):  # every value but the wall-clock fit time
        out = {}
        for r in _jsonl(path):
            for c in ("codes", "finetune"):
                r[c].pop("fit_seconds")
            out[r["pair"]] = json.dumps(r, sort_keys=True)
        return out

    assert records(os.path.join(full, "per_pair.jsonl")) == records(log)
    # a different configuration is refused for the same results dir
    assert run_cli(write_config, base_config(tiny_dataset, models, part, finetune_steps=2)) == 2


# ------------------------------------------------------------------------------------- bad input

def _one_line_error(capsys, needle: str) -> None:
    err = capsys.readouterr().err.strip()
    assert needle in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err


def test_bad_input_one_line_errors(tiny_dataset, models, tmp_path, write_config, capsys):
    out = str(tmp_path / "res")
    assert run_cli(write_config, base_config(tiny_dataset, models, out, checkpoint=str(tmp_path / "nope"))) == 2
    _one_line_error(capsys, "checkpoint not found")
    assert run_cli(write_config, base_config(tiny_dataset, models, out, estimator_checkpoint=models[2])) == 2
    _one_line_error(capsys, "trained on 32 px images, the NeRF renders 16 px")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("# subject input target\n1 0 1\n1 0 999\n")
    assert run_cli(write_config, base_config(tiny_dataset, models, out, pairs_file=str(pairs))) == 2
    _one_line_error(capsys, "target_row 999 does not exist")
    assert run_cli(write_config, base_config(tiny_dataset, models, out, fit={"stepz": 3})) == 2
    _one_line_error(capsys, "did you mean 'fit.steps'")
    # a subject with no valid rows
    bad = tmp_path / "novalid"
    shutil.copytree(tiny_dataset, bad)
    with h5py.File(bad / "subject0001.h5", "r+") as f:
        f["valid_mask"][:] = False
    assert run_cli(write_config, base_config(str(bad), models, out)) == 2
    _one_line_error(capsys, "subject 1 has no valid rows")
    assert not os.path.exists(os.path.join(out, "metrics.json")) and not os.path.exists(os.path.join(out, "report.md"))


def test_unlabelled_xgaze_subject_gets_estimator_only_metrics_and_controllability(tiny_dataset, models, tmp_path,
                                                                                  write_config):
    """A test subject in the processed layout with source 'xgaze' and no gaze labels (gaze_valid False)."""
    d = tmp_path / "xgaze"
    shutil.copytree(tiny_dataset, d)
    with h5py.File(d / "subject0001.h5", "r+") as f:
        f.attrs["source"] = "xgaze"
        f["face_gaze"][:] = 0.0
        f.create_dataset("gaze_valid", data=np.zeros(f["valid_mask"].shape[0], dtype=bool))
    out = str(tmp_path / "res")
    assert run_cli(write_config, base_config(str(d), models, out, regimes=["codes"])) == 0
    result = _json(os.path.join(out, "metrics.json"))
    o = result["aggregate"]["overall"]
    assert result["sources"] == {"1": "xgaze"} and o["pairs_with_gaze_label"] == 0
    assert isinstance(o["codes"]["gaze_err_est"], float) and isinstance(o["codes"]["head_err_est"], float)
    assert o["codes"]["gaze_err_label"] is None and o["floor"]["gaze_err_label"] is None  # no label: no number
    assert result["controllability"]["mean_deg"] >= 0
    recs = _jsonl(os.path.join(out, "per_pair.jsonl"))
    assert all(r["requested_from"] == "estimator" and r["redirection_from"] == "estimator" for r in recs)
    assert recs[0]["requested_gaze"] == pytest.approx(recs[0]["target_read"]["gaze"])


def test_config_files_load():
    from HeadNeRF.config import ConfigError
    from HeadNeRF.evaluation import load_eval_config

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name in ("quickstart_evaluation.yml", "full_evaluation.yml"):
        cfg = load_eval_config(os.path.join(root, "config", name))
        assert cfg.regimes == ["codes", "finetune"]
    with pytest.raises(ConfigError, match="regimes"):
        from HeadNeRF.config import from_dict
        from HeadNeRF.evaluation import EvalConfig

        from_dict(EvalConfig, yaml.safe_load("regimes: [codes, everything]"))


def test_help_documents_every_flag(capsys):
    import Evaluation

    with pytest.raises(SystemExit) as exc:
        Evaluation.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--config_file_path", "--checkpoint", "--estimator_checkpoint", "--results_dir", "--device",
                 "--max_new_pairs", "--no-progress"):
        assert flag in out


# ------------------------------------------------------------------------ honesty: baselines and guards

def test_gaze_blind_model_does_not_beat_the_no_redirection_row(tiny_dataset, tmp_path, write_config):
    """HeadNeRF ignores gaze: its redirected render is its no-redirection render, the exact readout reads the same
    gaze in both, and the report's checks say NOT met. No estimator: on synthetic data the readout measures gaze."""
    from HeadNeRF.config import TrainConfig, from_dict
    from HeadNeRF.training import train

    run = str(tmp_path / "blind")
    tc = tiny_config_dict(tiny_dataset, run, model_name="HeadNeRF", steps=2)
    tc["model"]["image_size"] = 32  # the readout needs a few pixels per eye (at 16 px many views show none)
    train(from_dict(TrainConfig, tc), progress=False)
    out = str(tmp_path / "res")
    cfg = base_config(tiny_dataset, (run, "", None), out, regimes=["codes"], controllability={"resolution": [2, 2]})
    assert run_cli(write_config, cfg) == 0
    result = _json(os.path.join(out, "metrics.json"))
    recs = _jsonl(os.path.join(out, "per_pair.jsonl"))
    for r in recs:
        assert r["codes"]["gaze_readout"] == r["codes_no_redirection"]["gaze_readout"]  # the same image, the same read
        assert r["codes"]["gaze_err_est"] is None or math.isnan(r["codes"]["gaze_err_est"])  # no estimator, no number
    o = result["aggregate"]["overall"]
    assert o["codes"]["gaze_err_readout_n"] == len(recs)
    assert o["floor"]["gaze_err_readout"] < 5.0  # the exact target reads back near its label (32 px, resized)
    c = result["aggregate"]["checks"]["codes"]
    assert not c["estimator"] and c["readout"]["ratio_to_no_redirection"] == pytest.approx(1.0, abs=1e-9)
    assert not c["readout"]["at_most_half_of_no_redirection"]
    report = _text(os.path.join(out, "report.md"))
    assert "**exact readout**" in report and "goal ≤ 0.5: **NOT met**" in report
    assert "Estimator: none" in report and "**Exact readout** (synthetic)" in report
    ro = result["controllability"]["readout"]
    assert ro["mean_deg"] is not None and result["controllability"]["mean_deg"] is None
    assert result["controllability"]["view"] == "frontal" and "seen frontally" in report  # the default map camera
    ign = result["controllability"]["ignore_request"]
    assert ro["mean_deg"] > 0.5 * ign["grid_centre_deg"]  # a blind model's map is no better than a constant answer


def test_no_estimator_needs_synthetic_labelled_data(tiny_dataset, models, tmp_path, write_config, capsys):
    d = tmp_path / "xgaze"
    shutil.copytree(tiny_dataset, d)
    with h5py.File(d / "subject0001.h5", "r+") as f:
        f.attrs["source"] = "xgaze"
    cfg = base_config(str(d), models, str(tmp_path / "res"), estimator_checkpoint="")
    assert run_cli(write_config, cfg) == 2
    _one_line_error(capsys, "estimator_checkpoint is empty and")


def _replace_line(path: str, lineno: int, text: str) -> None:
    lines = _text(path).splitlines(keepends=True)
    lines[lineno - 1] = text + "\n"
    with open(path, "w") as f:
        f.writelines(lines)


def test_damaged_per_pair_log_is_refused_with_its_line_number(tiny_dataset, models, tmp_path, write_config, capsys):
    out = str(tmp_path / "res")
    cfg = base_config(tiny_dataset, models, out, regimes=["codes"], controllability={"enabled": False})
    assert run_cli(write_config, cfg, "--max_new_pairs", "3") == 0
    log = os.path.join(out, "per_pair.jsonl")
    good = _text(log)
    assert len(good.splitlines()) == 3
    capsys.readouterr()
    for bad, needle in (('{"pair": 1, "key": "1:1', "per_pair.jsonl:2: not a JSON record"),  # corrupt middle line
                        ('{"key": "x"}', "per_pair.jsonl:2: a record without an integer \"pair\""),
                        (good.splitlines()[0], "per_pair.jsonl:2: pair 0 was already recorded on line 1")):
        _replace_line(log, 2, bad)
        damaged = _text(log)
        assert run_cli(write_config, cfg) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "the 1 line(s) after it are kept" in err, err
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert _text(log) == damaged  # nothing after the bad line was dropped
        with open(log, "w") as f:
            f.write(good)


def test_a_second_run_into_the_same_results_dir_refuses(tiny_dataset, models, tmp_path, write_config, capsys):
    from HeadNeRF.evaluation.guards import ResultsLock

    out = str(tmp_path / "res")
    os.makedirs(out)
    cfg = base_config(tiny_dataset, models, out, regimes=["codes"], controllability={"enabled": False})
    with ResultsLock(out):  # a first run holds the dir
        assert run_cli(write_config, cfg) == 2
        _one_line_error(capsys, f"is in use by another evaluation (pid {os.getpid()} on ")
    assert not os.path.exists(os.path.join(out, "per_pair.jsonl"))
    assert run_cli(write_config, cfg, "--max_new_pairs", "1") == 0  # released: the next run goes ahead


def test_models_trained_on_an_evaluated_subject_are_refused(tiny_dataset, models, tmp_path, write_config, capsys):
    from HeadNeRF.checkpoint import load_checkpoint, save_checkpoint

    run, est, _ = models
    out = str(tmp_path / "res")

    def estimator_with(train_subjects, dataset_dir):
        state = load_checkpoint(est)
        state["estimator"] = dict(state["estimator"], train_subjects=train_subjects, dataset_dir=dataset_dir)
        path = str(tmp_path / f"est_{len(os.listdir(tmp_path))}.pt")
        save_checkpoint(state, path)
        return path

    # the estimator trained on evaluated subject 1, by id in the same dataset and by content in a copy of it
    copy_dir = str(tmp_path / "copy")
    shutil.copytree(tiny_dataset, copy_dir)
    for train_dir in (tiny_dataset, copy_dir):
        cfg = base_config(tiny_dataset, models, out, estimator_checkpoint=estimator_with([0, 1], train_dir))
        assert run_cli(write_config, cfg) == 2
        _one_line_error(capsys, "was trained on evaluated subject(s) 1")
    # the NeRF trained on subject 1 (config data.subjects)
    state = load_checkpoint(run)
    state["config"]["data"]["subjects"] = [0, 1]
    nerf = str(tmp_path / "nerf_on_test.pt")
    save_checkpoint(state, nerf)
    assert run_cli(write_config, base_config(tiny_dataset, models, out, checkpoint=nerf)) == 2
    _one_line_error(capsys, "the NeRF")
    assert not os.path.exists(os.path.join(out, "per_pair.jsonl"))
    # trained on subject 0 only: accepted, and the report says it was checked; no train_subjects: a warning
    cfg = base_config(tiny_dataset, models, out, regimes=["codes"], controllability={"enabled": False},
                      estimator_checkpoint=estimator_with([0], tiny_dataset))
    assert run_cli(write_config, cfg) == 0
    assert "checked: the estimator trained on subjects [0]" in _text(os.path.join(out, "report.md"))
    capsys.readouterr()
    cfg = base_config(tiny_dataset, models, str(tmp_path / "res2"), regimes=["codes"], controllability={"enabled": False})
    assert run_cli(write_config, cfg, "--max_new_pairs", "1") == 0
    assert "warning: training subjects of the estimator unknown" in capsys.readouterr().out


def test_resume_refuses_other_code_or_dataset_content(tiny_dataset, models, tmp_path, write_config, capsys,
                                                      monkeypatch):
    from HeadNeRF.evaluation import protocol

    d = str(tmp_path / "data")
    shutil.copytree(tiny_dataset, d)
    out = str(tmp_path / "res")
    cfg = base_config(d, models, out, regimes=["codes"], controllability={"enabled": False})
    assert run_cli(write_config, cfg, "--max_new_pairs", "1") == 0
    monkeypatch.setattr(protocol, "code_version", lambda: "another version")
    assert run_cli(write_config, cfg) == 2
    _one_line_error(capsys, "differs in ['code_version']")
    monkeypatch.undo()
    row = _jsonl(os.path.join(out, "per_pair.jsonl"))[0]["target_row"]
    with h5py.File(os.path.join(d, "subject0001.h5"), "r+") as f:  # same path, other content
        f["face_patch"][row, 0, 0, 0] ^= 1
    assert run_cli(write_config, cfg) == 2
    _one_line_error(capsys, "differs in ['dataset_content']")


def test_fits_start_from_the_mean_code_unless_told_otherwise(tiny_dataset, models, tmp_path):
    from HeadNeRF.config import from_dict
    from HeadNeRF.data.codes import split_code
    from HeadNeRF.evaluation import EvalConfig
    from HeadNeRF.evaluation.protocol import fit_input, prepare

    for init in ("mean", "dataset"):
        cfg = from_dict(EvalConfig, base_config(tiny_dataset, models, str(tmp_path / init), code_init=init,
                                                fit={"steps": 0}, metrics={"identity": False}))
        ctx = prepare(cfg, progress=False)
        p = ctx.pairs[0]
        fit = fit_input(ctx, p.subject, p.input_row, ["codes"])["codes"]
        item = ctx.dataset[ctx.index_of[(p.subject, p.input_row)]]
        want = split_code(ctx.info.code_mean, ctx.info.code_slices)[0] if init == "mean" else item["shape_code"]
        assert torch.allclose(fit.shape_code[0], want), init
    assert not torch.allclose(item["shape_code"], split_code(ctx.info.code_mean, ctx.info.code_slices)[0])
    # the no-redirection render is the fit at the input's eye-in-head gaze, from the target camera
    from HeadNeRF.evaluation.protocol import render_at
    from HeadNeRF.fitting import render_fit
    from HeadNeRF.geometry.gaze import rotate_pitch_yaw

    tgt = ctx.dataset[ctx.index_of[(p.subject, p.target_row)]]
    kept = render_at(fit, tgt, None)
    input_in_head = rotate_pitch_yaw(item["gaze"][None], item["R_w2c"][None].transpose(-1, -2))
    cam = {k: tgt[k][None] for k in ("R_w2c", "t_w2c", "K", "eye_mask")}
    assert torch.allclose(kept, render_fit(fit, gaze_head=input_in_head, camera=cam), atol=1e-5)
    assert not torch.allclose(kept, render_at(fit, tgt, tgt["gaze"]), atol=1e-4)  # the requested gaze moves the eyes


def test_checks_say_met_only_when_the_eyes_beat_the_no_redirection_row():
    """The aggregate's checks on hand-made records: a model that lands near the request passes, frozen eyes do not."""
    from HeadNeRF.evaluation import report as R

    def rec(i, ours, frozen, floor):
        row = {"gaze_err_label": ours, "gaze_err_est": ours, "gaze_err_readout": ours}
        nr = {"gaze_err_label": frozen, "gaze_err_est": frozen, "gaze_err_readout": frozen}
        return {"pair": i, "subject": 1, "gaze_labelled": True, "codes": row, "codes_no_redirection": nr,
                "copy_input": dict(nr), "floor": {"gaze_err_label": floor, "head_err_label": 1.0, "gaze_err_readout": 0.5},
                "id_reference": {"same_subject": {"id_sim": 90.0 + i}, "other_subject": {"id_sim": 70.0 + i}}}

    good = R.aggregate([rec(i, 4.0 + i, 30.0, 3.0) for i in range(4)], ["codes"])
    c = good["checks"]["codes"]
    assert c["at_most_half_of_no_redirection"] and c["readout"]["at_most_half_of_no_redirection"]
    assert c["readout"]["within_floor_bound"] and c["readout"]["floor_bound"] == 6.5  # mean 5.5° <= 3 x 0.5° + 5°
    assert good["overall"]["id_reference"]["informative"]  # a constant 20-point gap is clear
    frozen = R.aggregate([rec(i, 30.0, 30.0 + i % 2, 3.0) for i in range(4)], ["codes"])
    c = frozen["checks"]["codes"]
    assert not c["at_most_half_of_no_redirection"] and not c["readout"]["at_most_half_of_no_redirection"]
    assert not c["readout"]["within_floor_bound"]
    same = [rec(i, 4.0, 30.0, 3.0) for i in range(4)]
    for i, r in enumerate(same):
        r["id_reference"]["other_subject"]["id_sim"] = 90.0 + (i % 2)  # another subject scores like the same one
    assert not R.aggregate(same, ["codes"])["overall"]["id_reference"]["informative"]


def test_the_readout_split_by_target_view_partitions_the_pairs(tmp_path):
    """``per_target_view``: every pair with a recorded target view in exactly one bin, the bins' pair-weighted means
    give the overall mean, a record without a view (written before the key existed) stays in the overall only, and
    the report and the closing lines show the split (a turned view's worse reading is not averaged away)."""
    from HeadNeRF.evaluation import report as R

    views = ["view |yaw| 0-20°", "view |yaw| >45°", "view |yaw| 0-20°", "view |yaw| 20-45°", "view |yaw| >45°", None]
    errors = [2.0, 12.0, 4.0, 3.0, 20.0, 7.0]
    records = []
    for i, (view, e) in enumerate(zip(views, errors)):
        r = {"pair": i, "subject": 1, "gaze_labelled": True, "codes": {"gaze_err_readout": e},
             "codes_no_redirection": {"gaze_err_readout": 30.0 + i}, "copy_input": {"gaze_err_readout": 35.0},
             "floor": {"gaze_err_label": 1.0, "head_err_label": 1.0, "gaze_err_readout": 0.1 * (i + 1)}}
        if view is not None:
            r["target_view"] = view
        records.append(r)
    agg = R.aggregate(records, ["codes"])
    by_view = agg["per_target_view"]
    assert list(by_view) == ["view |yaw| 0-20°", "view |yaw| 20-45°", "view |yaw| >45°"]
    assert [v["pairs"] for v in by_view.values()] == [2, 1, 2]
    assert by_view["view |yaw| >45°"]["codes"]["gaze_err_readout"] == pytest.approx(16.0)
    weighted = sum(v["pairs"] * v["codes"]["gaze_err_readout"] for v in by_view.values()) / 5
    assert weighted == pytest.approx(sum(errors[:5]) / 5)
    assert agg["overall"]["codes"]["gaze_err_readout"] == pytest.approx(sum(errors) / 6)  # the view-less record counts here

    lines = R._target_view_lines(by_view, ["codes"], 0)
    assert any(line.startswith("| view \\|yaw\\| >45° | 2 | 16.00 / 16.00") for line in lines), lines  # a markdown row
    table = [line for line in lines if line.startswith("|")]
    assert len({len(re.split(r"(?<!\\)\|", line)) for line in table}) == 1, table  # every row has the header's cells
    closing = R.summary_lines(agg, ["codes"], None)
    assert any("by target view" in line and "view |yaw| >45° 16.00 / 32.50 (2)" in line for line in closing), closing
    for r in records:  # no readout (real data): no split table, no closing line
        r["codes"]["gaze_err_readout"] = r["floor"]["gaze_err_readout"] = float("nan")
    agg = R.aggregate(records, ["codes"])
    assert R._target_view_lines(agg["per_target_view"], ["codes"], 0) == []
    assert not any("by target view" in line for line in R.summary_lines(agg, ["codes"], None))


def test_the_default_recipe_trains_evaluates_and_fits_a_photo(tiny_dataset, tmp_path, write_config):
    """The shipped quickstart's gaze keys (eye frame, head-model eye centres, gaze region, polar table, auto precision)
    at tiny sizes, through every script's path: training, the evaluation (codes + fine-tuning, the readout, the
    controllability map) and FittingSingleImage.py on a real photo. Not accuracy: that the default model's code paths
    (per-image centres from a fitted code, the gathered near-eye samples) run end to end and write their outputs."""
    import subprocess
    import sys

    import imageio.v2 as imageio
    import skimage.data

    from HeadNeRF.config import TrainConfig, from_dict, load_yaml
    from HeadNeRF.training import train

    shipped = load_yaml(os.path.join(ROOT, "config", "quickstart.yml")).model
    run = str(tmp_path / "default")
    tc = tiny_config_dict(tiny_dataset, run, steps=3)
    tc["model"].update(featmap_size=32, image_size=32, gaze_input=shipped.gaze_input, eye_frame_freqs=2,  # 32 px: readable eyes
                       eye_centers_from_head_model=shipped.eye_centers_from_head_model,
                       gaze_region_radius=shipped.gaze_region_radius, eye_polar_cells=8,
                       mlp_precision=shipped.mlp_precision)
    tc["rays_per_image"] = 96
    assert shipped.eye_centers_from_head_model and shipped.gaze_region_radius > 0  # what this test is about
    train(from_dict(TrainConfig, tc), progress=False)
    out = str(tmp_path / "res")
    assert run_cli(write_config, base_config(tiny_dataset, (run, "", None), out)) == 0
    result = _json(os.path.join(out, "metrics.json"))
    assert result["aggregate"]["overall"]["codes"]["gaze_err_readout_n"] > 0
    assert result["controllability"]["readout"]["mean_deg"] is not None
    photo = str(tmp_path / "astronaut.png")
    imageio.imwrite(photo, skimage.data.astronaut())
    res = subprocess.run([sys.executable, os.path.join(ROOT, "FittingSingleImage.py"), "--model_path", run, "--img", photo,
                          "--save_root", str(tmp_path / "fit"), "--steps", "3", "--finetune_steps", "1", "--no_mp4",
                          "--no_progress"], check=False, capture_output=True, text=True, timeout=900, cwd=ROOT,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stderr
    fit = _json(str(tmp_path / "fit" / "fit.json"))
    assert "gaze_sweep.gif" in fit["outputs"] and os.path.isfile(tmp_path / "fit" / "photo_strip.png")


def test_landmark_code_init_places_the_eyes_closer_than_the_mean_code(tiny_dataset):
    """code_init landmarks: the shape code fitted to a row's own 68 landmarks puts the head model's eyeballs
    nearer the generator's than the prior mean does (the identity is in the landmarks), on every subject."""
    from HeadNeRF.data.synthetic.eye_centers import head_model_eye_centers
    from HeadNeRF.data.dataset import GazeDataset
    from HeadNeRF.evaluation.protocol import landmark_shape_code

    ds = GazeDataset(tiny_dataset, "all", image_size=64)
    fitted, prior = [], []
    for i in range(0, len(ds), 3):
        item = ds[i]
        truth = head_model_eye_centers(item["shape_code"][None])
        code = landmark_shape_code(item)
        assert code.shape == item["shape_code"].shape and torch.isfinite(code).all()
        fitted.append((head_model_eye_centers(code[None]) - truth).norm(dim=-1).mean())
        prior.append((head_model_eye_centers(torch.zeros_like(code)[None]) - truth).norm(dim=-1).mean())
    assert torch.stack(fitted).mean() < 0.85 * torch.stack(prior).mean(), (fitted, prior)
