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
from tqdm import tqdm

from ..atomic_io import atomic_write, atomic_write_json
from ..config import to_dict
from . import report as R
from .config import EvalConfig
from .controllability import controllability, plot_controllability
from .base import EvaluationError, candidates
from .guards import ResultsLock
from .metrics import fid_from_features
from .pairs import write_pairs_file
from .protocol import (
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
    atomic_write(path, lambda tmp: np.savez(tmp, **arrays))


def _fid(ctx, results_dir: str, records: list[dict], regimes: list[str]) -> dict:
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


def _open_results_dir(ctx, key: dict, log) -> dict:
    """Refuse a results dir of another configuration (or a foreign ``per_pair.jsonl``), record this run's key,
    write ``pairs.txt`` and return the finished records {pair index: record}."""
    cfg, out_dir = ctx.cfg, ctx.cfg.results_dir
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
    return records


def _score_pending(ctx, records: dict, ctrl_inputs: list, max_new_pairs: int | None, progress: bool, log
                   ) -> tuple[dict, bool]:
    """Fit each pending input once and score its pairs, appending each record to ``per_pair.jsonl`` (and to
    ``records``). Returns ({(subject, row): {"codes": fit}} for the controllability inputs, stopped early)."""
    cfg, out_dir = ctx.cfg, ctx.cfg.results_dir
    log_path, regimes = os.path.join(out_dir, "per_pair.jsonl"), list(cfg.regimes)
    pending = [p for p in ctx.pairs if p.index not in records]
    fit_cache: dict = {}
    if not pending:
        return fit_cache, False
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
                    return fit_cache, True
            del fits
    finally:
        bar.close()
    return fit_cache, False


def _controllability_map(ctx, key: dict, ctrl_inputs: list, fit_cache: dict, progress: bool) -> dict | None:
    """The controllability map (reused from ``controllability.json`` when its key matches) and its figure."""
    if not ctrl_inputs:
        return None
    cfg, out_dir = ctx.cfg, ctx.cfg.results_dir
    ctrl = None
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
    return ctrl


def _result(ctx, recs: list[dict], ctrl: dict | None, t0: float) -> dict:
    """The content of ``metrics.json``: config, checkpoints, aggregate (with FID), checks' notes, timing."""
    cfg, regimes = ctx.cfg, list(ctx.cfg.regimes)
    fid = _fid(ctx, cfg.results_dir, recs, regimes) if ctx.fid is not None else None
    notes = dict(ctx.skipped)
    if fid is not None:
        notes["fid"] += (f"; {len(recs)} pairs (per subject fewer): FID from so few images is biased upwards")
    return {
        "config": to_dict(cfg),
        "subjects": sorted(ctx.subjects),
        "sources": {str(s): r.source for s, r in ctx.subjects.items()},
        "inputs": len({(p.subject, p.input_row) for p in ctx.pairs}),
        "checkpoint_file": ctx.checkpoint_file, "estimator_file": ctx.estimator_file,
        "sha256": ctx.sha256,
        "model": {"model_name": ctx.info.model_name, "image_size": ctx.image_size, "step": ctx.info.step},
        "estimator_input_size": int(ctx.est_info.input_size) if ctx.est_info is not None else None,
        "estimator_report": ctx.est_info.report if ctx.est_info is not None else None,
        "aggregate": R.aggregate(recs, regimes, fid),
        "controllability": ctrl,
        "metric_notes": notes,
        "training_check": ctx.training_check,
        "timing": R.timing(recs, regimes),
        "seconds": time.perf_counter() - t0,
    }


def _write_outputs(ctx, result: dict, recs: list[dict]) -> None:
    """grid.png, the gaze-vs-redirection figure, report.md, then metrics.json (last: its presence means "complete")."""
    cfg, out_dir, regimes = ctx.cfg, ctx.cfg.results_dir, list(ctx.cfg.regimes)
    rows = [os.path.join(out_dir, "grids", f"pair_{i:05d}.png") for i in range(min(cfg.grid_pairs, len(ctx.pairs)))]
    R.combine_grids(rows, os.path.join(out_dir, "grid.png"), ["input", "target"] + regimes)
    R.plot_gaze_vs_redirection(recs, regimes, os.path.join(out_dir, "gaze_error_vs_redirection.png"))
    R.write_report_md(os.path.join(out_dir, "report.md"), result)
    atomic_write_json(os.path.join(out_dir, "metrics.json"), result)


def _evaluate_locked(ctx, t0: float, max_new_pairs: int | None, progress: bool, log) -> dict | None:
    """The run, once the results dir is locked: open it, score the pending pairs, controllability, write."""
    cfg = ctx.cfg
    key = run_key(ctx)
    records = _open_results_dir(ctx, key, log)
    ctrl_inputs = _controllability_inputs(ctx.pairs, cfg.controllability.inputs_per_subject) \
        if cfg.controllability.enabled else []
    fit_cache, stopped = _score_pending(ctx, records, ctrl_inputs, max_new_pairs, progress, log)
    if stopped:
        return None
    recs = [records[p.index] for p in ctx.pairs]
    ctrl = _controllability_map(ctx, key, ctrl_inputs, fit_cache, progress)
    result = _result(ctx, recs, ctrl, t0)
    _write_outputs(ctx, result, recs)
    for line in R.summary_lines(result["aggregate"], list(cfg.regimes), ctrl):
        log(f"[evaluation] {line}")
    log(f"[evaluation] wrote {os.path.join(cfg.results_dir, 'report.md')} and metrics.json")
    return result
