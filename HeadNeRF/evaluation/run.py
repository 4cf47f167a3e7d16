"""One evaluation run, start to finish (what ``Evaluation.py`` calls).

Order: check everything (``protocol.prepare``: checkpoints, estimator input size, subjects,
pairs, no evaluated subject in either model's training set, metric backends) -> lock the
results dir (a second run into it refuses, naming the first) -> refuse a results dir that
holds records of another configuration (code version, checkpoints, dataset content, metric
weights, settings) or a damaged ``per_pair.jsonl`` -> fit/render/score the pairs not yet in ``per_pair.jsonl`` (each input fitted once) ->
controllability map -> FID from the stored per-pair features -> ``metrics.json``,
``report.md`` and the figures, each written atomically at the end.
"""

import json
import os
import time

import numpy as np

from ..atomic_io import atomic_write_json
from ..config import to_dict
from . import report as R
from .config import EvalConfig
from .controllability import controllability, plot_controllability
from .guards import ResultsLock
from .pairs import write_pairs_file
from .protocol import (
    EvaluationError,
    candidates,
    check_inputs_readable,
    fit_input,
    prepare,
    run_key,
    score_pair,
)

__all__ = ["RESULT_FILES", "evaluate"]

RESULT_FILES = ("per_pair.jsonl", "metrics.json", "report.md", "pairs.txt", "grid.png", "gaze_error_vs_redirection.png")


def _controllability_inputs(pairs, per_subject: int) -> list[tuple[int, int]]:
    chosen, count = [], {}
    for p in pairs:
        key = (p.subject, p.input_row)
        if key not in chosen and count.get(p.subject, 0) < per_subject:
            chosen.append(key)
            count[p.subject] = count.get(p.subject, 0) + 1
    return chosen


def _save_npz(path: str, arrays: dict) -> None:
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _fid(ctx, results_dir: str, records: list[dict], regimes: list[str]) -> dict:
    from .metrics import fid_from_features

    feats = {}
    for r in records:
        with np.load(os.path.join(results_dir, "features", f"pair_{r['pair']:05d}.npz")) as z:
            feats[r["pair"]] = {k: z[k] for k in z.files}
    out = {"overall": {}, "per_subject": {}}
    groups = {"overall": records}
    groups.update({str(s): [r for r in records if r["subject"] == s] for s in sorted({r["subject"] for r in records})})
    for name, recs in groups.items():
        if name != "overall" and len(groups) == 2:  # one subject: its FID is the overall one
            out["per_subject"][name] = out["overall"]
            continue
        real = np.stack([feats[r["pair"]]["target"] for r in recs])
        vals = {c: fid_from_features(real, np.stack([feats[r["pair"]][c] for r in recs]))
                for c in candidates(regimes)}
        if name == "overall":
            out["overall"] = vals
        else:
            out["per_subject"][name] = vals
    return out


def evaluate(cfg: EvalConfig, max_new_pairs: int | None = None, progress: bool = True, log=print) -> dict | None:
    """Run (or continue) an evaluation. Returns the result dict, or None when stopped by ``max_new_pairs``.

    Raises:
        EvaluationError: bad input (one line); nothing complete-looking is written.
    """
    t0 = time.perf_counter()
    ctx = prepare(cfg, progress=progress)
    check_inputs_readable(ctx)
    for what, note in ctx.training_check.items():
        if note.startswith("unknown"):
            log(f"[evaluation] warning: training subjects of the {what} {note}")
    os.makedirs(cfg.results_dir, exist_ok=True)
    with ResultsLock(cfg.results_dir):
        return _evaluate_locked(ctx, t0, max_new_pairs, progress, log)


def _check_records(records: dict, pairs: list, log_path: str) -> None:
    """Every record must be one of this run's pairs (index and key): one line naming the first that is not."""
    for i, rec in records.items():
        if not 0 <= i < len(pairs) or rec.get("key") != pairs[i].key:
            want = pairs[i].key if 0 <= i < len(pairs) else f"an index below {len(pairs)}"
            raise EvaluationError(f"{log_path}: the record of pair {i} has key {rec.get('key')!r}, this run's pair "
                                  f"{i} is {want!r}; use another results_dir or delete that one")


def _evaluate_locked(ctx, t0: float, max_new_pairs: int | None, progress: bool, log) -> dict | None:
    from tqdm import tqdm

    cfg = ctx.cfg
    out_dir = cfg.results_dir
    key = run_key(ctx)
    state_path, log_path = os.path.join(out_dir, "run_state.json"), os.path.join(out_dir, "per_pair.jsonl")
    if os.path.isfile(state_path):
        with open(state_path) as f:
            old = json.load(f).get("run_key", {})
        if old != key:
            changed = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
            raise EvaluationError(f"{out_dir} holds an evaluation of another configuration (differs in {changed}); "
                                  "use another results_dir or delete that one")
    elif os.path.isfile(log_path) and os.path.getsize(log_path) > 0:
        raise EvaluationError(f"{out_dir}: per_pair.jsonl without run_state.json (not written by this tool?); "
                              "use another results_dir or delete that one")
    else:
        atomic_write_json(state_path, {"run_key": key})
    write_pairs_file(os.path.join(out_dir, "pairs.txt"), ctx.pairs,
                     header=f"pairs of {cfg.dataset_dir} ({'from ' + cfg.pairs_file if cfg.pairs_file else f'seed {cfg.seed}'})")
    records = R.read_records(log_path, log=log)
    _check_records(records, ctx.pairs, log_path)
    pending = [p for p in ctx.pairs if p.index not in records]
    regimes = list(cfg.regimes)
    ctrl_inputs = _controllability_inputs(ctx.pairs, cfg.controllability.inputs_per_subject) \
        if cfg.controllability.enabled else []
    fit_cache: dict = {}
    if pending:
        for name in ("metrics.json", "report.md"):  # never leave an old complete-looking report beside new work
            if os.path.isfile(os.path.join(out_dir, name)):
                os.remove(os.path.join(out_dir, name))
        if records:
            log(f"[evaluation] continuing: {len(records)} of {len(ctx.pairs)} pairs already done in {log_path}")
        groups: dict = {}
        for p in pending:
            groups.setdefault((p.subject, p.input_row), []).append(p)
        os.makedirs(os.path.join(out_dir, "grids"), exist_ok=True)
        if ctx.fid is not None:
            os.makedirs(os.path.join(out_dir, "features"), exist_ok=True)
        bar = tqdm(total=len(ctx.pairs), initial=len(records), desc="pairs", disable=not progress, dynamic_ncols=True)
        new = 0
        try:
            for (subject, row), group in groups.items():
                fits = fit_input(ctx, subject, row, regimes)
                if (subject, row) in ctrl_inputs:
                    fit_cache[(subject, row)] = {"codes": fits["codes"]}
                for p in group:
                    rec, images, feats = score_pair(ctx, p, fits)
                    if feats:
                        _save_npz(os.path.join(out_dir, "features", f"pair_{p.index:05d}.npz"), feats)
                    if p.index < cfg.grid_pairs:
                        R.save_pair_grid(os.path.join(out_dir, "grids", f"pair_{p.index:05d}.png"), images,
                                         ["input", "target"] + regimes)
                    R.append_record(log_path, rec)
                    records[p.index] = rec
                    new += 1
                    bar.update(1)
                    if max_new_pairs is not None and new >= max_new_pairs and len(records) < len(ctx.pairs):
                        log(f"[evaluation] stopped after {new} new pairs (--max_new_pairs); "
                            f"{len(ctx.pairs) - len(records)} left: run the same command again to continue")
                        return None
                del fits
        finally:
            bar.close()
    recs = [records[p.index] for p in ctx.pairs]

    ctrl = None
    if ctrl_inputs:
        ctrl_path = os.path.join(out_dir, "controllability.json")
        ckey = {"run_key": key, "controllability": to_dict(cfg.controllability), "inputs": ctrl_inputs,
                "grid": "eye-in-head"}  # what the grid means (a cached map of another meaning is recomputed)
        if os.path.isfile(ctrl_path):
            with open(ctrl_path) as f:
                cached = json.load(f)
            if cached.get("key") == json.loads(json.dumps(ckey)):
                ctrl = cached["result"]
        if ctrl is None:
            ctrl = controllability(ctx, ctrl_inputs, fit_cache, progress=progress)
            atomic_write_json(ctrl_path, {"key": ckey, "result": ctrl})
        plot_controllability(ctrl, os.path.join(out_dir, "controllability.png"))

    fid = _fid(ctx, out_dir, recs, regimes) if ctx.fid is not None else None
    agg = R.aggregate(recs, regimes, fid)
    notes = dict(ctx.skipped)
    if fid is not None:
        notes["fid"] += (f"; {len(recs)} pairs (per subject fewer): FID from so few images is biased upwards")
    result = {
        "config": to_dict(cfg),
        "subjects": sorted(ctx.subjects),
        "sources": {str(s): r.source for s, r in ctx.subjects.items()},
        "inputs": len({(p.subject, p.input_row) for p in ctx.pairs}),
        "checkpoint_file": ctx.checkpoint_file, "estimator_file": ctx.estimator_file,
        "sha256": ctx.sha256,
        "model": {"model_name": ctx.info.model_name, "image_size": ctx.image_size, "step": ctx.info.step},
        "estimator_input_size": int(ctx.est_info.input_size) if ctx.est_info is not None else None,
        "estimator_report": ctx.est_info.report if ctx.est_info is not None else None,
        "aggregate": agg,
        "controllability": ctrl,
        "metric_notes": notes,
        "training_check": ctx.training_check,
        "timing": R.timing(recs, regimes),
        "seconds": time.perf_counter() - t0,
    }
    rows = [os.path.join(out_dir, "grids", f"pair_{i:05d}.png") for i in range(min(cfg.grid_pairs, len(ctx.pairs)))]
    R.combine_grids(rows, os.path.join(out_dir, "grid.png"), ["input", "target"] + regimes)
    R.plot_gaze_vs_redirection(recs, regimes, os.path.join(out_dir, "gaze_error_vs_redirection.png"))
    R.write_report_md(os.path.join(out_dir, "report.md"), result)
    atomic_write_json(os.path.join(out_dir, "metrics.json"), result)  # last: its presence means "complete"
    o = agg["overall"]
    for r in regimes:
        c = agg["checks"][r]
        ro = c.get("readout")
        if ro:
            log(f"[evaluation] {R.NAMES[r]}: exact readout {R._fmt(ro['gaze_err'], 2)}° (median "
                f"{R._fmt(ro['gaze_err_median'], 2)}°), no redirection {R._fmt(ro['no_redirection_gaze_err'], 2)}° "
                f"(ratio {R._fmt(ro['ratio_to_no_redirection'], 2)}: {R._met(ro['at_most_half_of_no_redirection'])}), "
                f"floor {R._fmt(ro['floor'], 2)}° (bound {R._fmt(ro['floor_bound'], 2)}°: {R._met(ro['within_floor_bound'])})")
        if not c["estimator"]:
            continue
        log(f"[evaluation] {R.NAMES[r]}: gaze {R._fmt(o[r]['gaze_err_est'])}° vs estimator on target, "
            f"{R._fmt(o[r]['gaze_err_label'])}° vs label (no redirection {R._fmt(c['no_redirection_gaze_err'])}°: "
            f"ratio {R._fmt(c['ratio_to_no_redirection'], 2)}, goal <= 0.5 {R._met(c['at_most_half_of_no_redirection'])}; "
            f"copy input {R._fmt(c['copy_input_gaze_err'])}°, estimator floor {R._fmt(c['floor_gaze_err_label'])}°), "
            f"head {R._fmt(o[r]['head_err_est'])}°, SSIM {R._fmt(o[r]['ssim'])}, PSNR {R._fmt(o[r]['psnr'], 2)} dB")
    ref = o["id_reference"]
    if ref["gap_n"]:
        log(f"[evaluation] identity: ours {', '.join(R._fmt(o[r]['id_sim'], 1) for r in regimes)}; same subject "
            f"{R._fmt(ref['same_subject'], 1)}, another subject from the same camera {R._fmt(ref['other_subject'], 1)}"
            f" -> {'informative' if ref['informative'] else 'NOT informative on this data'}")
    if ctrl and ctrl.get("inputs"):
        ign = ctrl.get("ignore_request") or {}
        ro = ctrl.get("readout") or {}
        log(f"[evaluation] controllability over {len(ctrl['inputs'])} inputs: exact readout {R._fmt(ro.get('mean_deg'), 2)}°, "
            f"estimator {R._fmt(ctrl.get('mean_deg'), 2)}° (ignoring the request: {R._fmt(ign.get('input_gaze_deg'), 2)}° "
            f"with the input's gaze, {R._fmt(ign.get('grid_centre_deg'), 2)}° with the grid centre)")
    log(f"[evaluation] wrote {os.path.join(out_dir, 'report.md')} and metrics.json")
    return result
