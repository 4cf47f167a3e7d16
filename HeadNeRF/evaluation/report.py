"""Results on disk: the resumable per-pair log, the aggregate, and the human-readable report.

* ``per_pair.jsonl``: one JSON object per finished pair, appended (flushed and fsynced) as
  pairs finish. :func:`read_records` drops a torn last line (a kill during the write) and
  truncates the file to the last complete record, so a re-run appends cleanly.
* ``metrics.json``, ``report.md``, ``grid.png``, ``gaze_error_vs_redirection.png`` are written
  at the end only, each atomically (``atomic_io``): an interrupted run never
  leaves a complete-looking report.
* Aggregation reads only the records (plus the per-pair FID feature files), never in-memory
  state, so a resumed run and an uninterrupted one give equal numbers.
"""

import json
import math
import os

import numpy as np

from ..atomic_io import atomic_write, atomic_write_text
from .base import EvaluationError, candidates, no_redirection
from .metrics import to_uint8

__all__ = [
    "METRIC_KEYS",
    "PUBLISHED_XGAZE",
    "aggregate",
    "append_record",
    "combine_grids",
    "plot_gaze_vs_redirection",
    "read_records",
    "save_pair_grid",
    "timing",
    "write_report_md",
]

# metric key -> (column title, digits, higher is better)
METRIC_KEYS = {
    "gaze_err_est": ("Gaze ° (vs est. on target)", 3, False),
    "gaze_err_label": ("Gaze ° (vs label)", 3, False),
    "gaze_err_readout": ("Gaze ° (exact readout)", 3, False),  # synthetic: read gaze vs requested eye-in-head gaze
    "head_err_est": ("Head ° (vs est. on target)", 3, False),
    "head_err_label": ("Head ° (vs label)", 3, False),
    "ssim": ("SSIM", 3, True),
    "psnr": ("PSNR", 3, True),
    "psnr_head": ("PSNR head", 3, True),
    "l1": ("L1", 4, False),
    "lpips": ("LPIPS", 3, False),
    "id_sim": ("ID", 3, True),
}

# anchors.md §1: ETH-XGaze, GazeNeRF protocol (gaze, head, SSIM, PSNR, LPIPS, FID, ID). Not our data.
PUBLISHED_XGAZE = [
    ("STED", 16.217, 13.153, 0.726, 17.530, 0.300, 115.020, 24.347, "GazeGaussian paper, Table 1"),
    ("HeadNeRF", 12.117, 4.275, 0.720, 15.298, 0.294, 69.487, 46.126, "GazeGaussian paper, Table 1"),
    ("GazeNeRF", 6.944, 3.470, 0.733, 15.453, 0.291, 81.816, 45.207, "GazeGaussian paper, Table 1 (reprint)"),
    ("Gaussian Head Avatar", 30.963, 13.563, 0.638, 12.108, 0.359, 74.560, 27.272, "GazeGaussian paper, Table 1"),
    ("GazeGaussian", 6.622, 2.128, 0.823, 18.734, 0.216, 41.972, 67.749, "GazeGaussian paper, Table 1"),
    ("RTGaze", 9.047, 3.631, 0.715, 19.007, 0.262, 38.346, 60.708, "secondary source (paper digest), unchecked"),
]


# ------------------------------------------------------------------------------------ file i/o

def read_records(path: str, log=print) -> dict[int, dict]:
    """Finished pairs by pair index.

    A torn last line (no newline at the end: a kill during the write) is dropped and the file truncated to
    the last complete record. Any other bad line (not JSON, not an object with an integer ``"pair"``, a pair
    already recorded) is refused with its line number: the records after it are never dropped.

    Raises:
        EvaluationError: ``path:line: what is wrong`` (one line).
    """
    out: dict[int, dict] = {}
    line_of: dict[int, int] = {}
    if not os.path.isfile(path):
        return out
    with open(path, "rb") as f:
        data = f.read()
    pos, lineno = 0, 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        lineno += 1
        if end < 0:  # no newline: the last write was torn by a kill
            log(f"[evaluation] {path}:{lineno}: dropping a torn last line ({len(data) - pos} bytes, no newline)")
            with open(path, "r+b") as f:
                f.truncate(pos)
            break
        raw = data[pos:end]
        after = data.count(b"\n", end + 1)
        fix = (f"fix or delete that line (the {after} line(s) after it are kept), or use another results_dir"
               if after else "fix or delete that line, or use another results_dir")
        try:
            rec = json.loads(raw)
        except ValueError:
            shown = raw[:60].decode(errors="replace")
            raise EvaluationError(f"{path}:{lineno}: not a JSON record ({shown!r}); {fix}") from None
        pair = rec.get("pair") if isinstance(rec, dict) else None
        if not isinstance(pair, int) or isinstance(pair, bool):
            raise EvaluationError(f"{path}:{lineno}: a record without an integer \"pair\" key; {fix}")
        if pair in out:
            raise EvaluationError(f"{path}:{lineno}: pair {pair} was already recorded on line {line_of[pair]} "
                                  f"(two runs wrote into this results dir?); {fix}")
        out[pair], line_of[pair] = rec, lineno
        pos = end + 1
    return out


def append_record(path: str, record: dict) -> None:
    line = json.dumps(record, allow_nan=True) + "\n"  # floats round-trip exactly (repr)
    with open(path, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


# ---------------------------------------------------------------------------------- aggregation

def _mean(values) -> tuple[float, int]:
    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return (float(np.mean(v)) if v else math.nan), len(v)


def _median(values) -> float:
    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.median(v)) if v else math.nan


def _summary(records: list[dict], candidates: list[str], regimes: list[str]) -> dict:
    out = {}
    for c in candidates:
        entry = {}
        for k in METRIC_KEYS:
            entry[k], entry[f"{k}_n"] = _mean([r[c].get(k) for r in records])
        entry["gaze_err_readout_median"] = _median([r[c].get("gaze_err_readout") for r in records])
        found = [r[c].get("id_face_found") for r in records if r[c].get("id_face_found") is not None]
        entry["id_face_found_rate"] = float(np.mean(found)) if found else math.nan
        if c in regimes:  # (fit_seconds is timing, kept out of the aggregate: see timing())
            entry["fit_psnr_head"], _ = _mean([r[c].get("fit_psnr_head") for r in records])
        out[c] = entry
    floor = {}
    for k in ("gaze_err_label", "head_err_label", "gaze_err_readout"):
        floor[k], floor[f"{k}_n"] = _mean([r["floor"].get(k) for r in records])
    floor["gaze_err_readout_median"] = _median([r["floor"].get("gaze_err_readout") for r in records])
    out["floor"] = floor
    out["id_reference"] = _identity_reference(records)
    out["pairs"] = len(records)
    out["pairs_with_gaze_label"] = int(sum(bool(r["gaze_labelled"]) for r in records))
    return out


# The identity metric is called informative on a dataset when the same subject (target camera, another gaze)
# scores clearly above another subject (same camera): by at least ID_GAP_MIN points (cosine x 100; dlib's own
# same/different-person threshold, Euclidean 0.6 on unit vectors, is a cosine of 82, far below the ~96 that
# different synthetic subjects reach from one camera) and by ID_GAP_SE paired standard errors (not noise).
ID_GAP_MIN = 5.0
ID_GAP_SE = 3.0


def _identity_reference(records: list[dict]) -> dict:
    """Means of the two identity reference rows over the pairs, their paired gap and whether it is clear."""
    refs = [r.get("id_reference") for r in records]
    out = {}
    for k in ("same_subject", "other_subject"):
        out[k], out[f"{k}_n"] = _mean([x[k]["id_sim"] for x in refs if x and x.get(k)])
    diffs = np.array([x["same_subject"]["id_sim"] - x["other_subject"]["id_sim"] for x in refs
                      if x and x.get("same_subject") and x.get("other_subject")], dtype=float)
    out["gap"] = float(diffs.mean()) if len(diffs) else math.nan
    out["gap_se"] = float(diffs.std(ddof=1) / math.sqrt(len(diffs))) if len(diffs) > 1 else math.nan
    out["gap_n"] = int(len(diffs))
    out["informative"] = bool(len(diffs) > 1 and out["gap"] >= ID_GAP_MIN and out["gap"] >= ID_GAP_SE * out["gap_se"])
    return out


def timing(records: list[dict], regimes: list[str]) -> dict:
    """Mean fit seconds per input and regime (wall clock: differs between runs, so not in the aggregate)."""
    return {r: _mean([rec[r].get("fit_seconds") for rec in records])[0] for r in regimes}


# The readout check "close to the floor": mean readout error <= READOUT_FLOOR_FACTOR x the readout's error on
# the exact targets + READOUT_FLOOR_SLACK_DEG. The floor (~0.5° at 64 px) is what the readout gets on the
# generator's own images; a model's render is never pixel-exact (blur, colour bias shift the best-matching gaze),
# so a pure multiple of a sub-degree floor would fail every model. The slack is 5°: about a sixth of the
# mean redirection (~30° between two synthetic gazes) and at 64 px a pupil shift of a fifth of a pixel, so a
# model that passes puts the pupil where asked to within what the pixels can show. It is an aim, like the
# estimator's "1.5x floor"; the check frozen eyes cannot pass is the no-redirection ratio.
READOUT_FLOOR_FACTOR = 3.0
READOUT_FLOOR_SLACK_DEG = 5.0


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) else math.nan


def _checks(o: dict, regimes: list[str]) -> dict:
    """Per regime: is the redirected gaze error clearly below the baselines that cannot move the eyes?

    The gaze error is against the label where the targets have labels (else against the estimator's reading
    of the target). ``at_most_half_of_no_redirection`` is the check frozen eyes cannot pass: the
    no-redirection row gets the head pose from the target camera for free, like the redirection does.
    """
    key = "gaze_err_label" if o["pairs_with_gaze_label"] else "gaze_err_est"
    floor = o["floor"]["gaze_err_label"] if key == "gaze_err_label" else math.nan
    checks = {}
    for r in regimes:
        e, nr, cp = o[r][key], o[no_redirection(r)][key], o["copy_input"][key]
        c = {"key": key, "estimator": bool(o[r][f"{key}_n"]), "gaze_err": e, "no_redirection_gaze_err": nr, "copy_input_gaze_err": cp,
             "floor_gaze_err_label": floor, "ratio_to_no_redirection": _ratio(e, nr),
             "ratio_to_copy_input": _ratio(e, cp), "ratio_to_floor": _ratio(e, floor)}
        c["at_most_half_of_no_redirection"] = bool(c["ratio_to_no_redirection"] <= 0.5)
        c["at_most_half_of_copy_input"] = bool(c["ratio_to_copy_input"] <= 0.5)
        c["within_1.5x_of_floor"] = bool(c["ratio_to_floor"] <= 1.5)
        if o[r]["gaze_err_readout_n"]:  # synthetic data: the same checks with the exact readout, no estimator
            e, nr = o[r]["gaze_err_readout"], o[no_redirection(r)]["gaze_err_readout"]
            floor_ro = o["floor"]["gaze_err_readout"]
            bound = READOUT_FLOOR_FACTOR * floor_ro + READOUT_FLOOR_SLACK_DEG
            c["readout"] = {"gaze_err": e, "gaze_err_median": o[r]["gaze_err_readout_median"],
                            "no_redirection_gaze_err": nr, "copy_input_gaze_err": o["copy_input"]["gaze_err_readout"],
                            "floor": floor_ro, "ratio_to_no_redirection": _ratio(e, nr), "floor_bound": bound,
                            "at_most_half_of_no_redirection": bool(_ratio(e, nr) <= 0.5),
                            "within_floor_bound": bool(e <= bound)}
        checks[r] = c
    return checks


def aggregate(records: list[dict], regimes: list[str], fid: dict | None = None) -> dict:
    """Per-subject, per-target-view (``readout.view_bin`` of the target camera) and overall means (over pairs) of
    every metric, for the regimes and the baselines.

    ``fid``: optional {"overall": {candidate: value}, "per_subject": {subject: {candidate: value}}}.
    """
    names = candidates(regimes)
    records = sorted(records, key=lambda r: r["pair"])
    out = {"overall": _summary(records, names, regimes), "per_subject": {}, "per_target_view": {}}
    for s in sorted({r["subject"] for r in records}):
        out["per_subject"][str(s)] = _summary([r for r in records if r["subject"] == s], names, regimes)
    # records written before the target view was recorded (a resumed run) stay out of this split only
    for view in sorted({r["target_view"] for r in records if r.get("target_view")}):
        out["per_target_view"][view] = _summary([r for r in records if r.get("target_view") == view], names, regimes)
    for c in names:
        out["overall"][c]["fid"] = (fid or {}).get("overall", {}).get(c, math.nan)
        for s in out["per_subject"]:
            out["per_subject"][s][c]["fid"] = (fid or {}).get("per_subject", {}).get(s, {}).get(c, math.nan)
    out["checks"] = _checks(out["overall"], regimes)
    return out


# --------------------------------------------------------------------------------------- report

def fmt(x, digits: int = 3) -> str:
    """A number for the report: ``digits`` decimals; "–" for None/NaN, "inf" for infinity."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:.{digits}f}"


NAMES = {"codes": "ours: latent codes only", "finetune": "ours: codes + fine-tuning",
         "codes_no_redirection": "no redirection: codes fit, input's eye-in-head gaze kept (baseline)",
         "finetune_no_redirection": "no redirection: fine-tuned fit, input's eye-in-head gaze kept (baseline)",
         "copy_input": "copy the input (baseline)"}


def _name(c: str, finetune_steps: int) -> str:
    return NAMES.get(c, c) + (f" ({finetune_steps} steps)" if c == "finetune" else "")


def _main_table(summary: dict, regimes: list[str], finetune_steps: int) -> list[str]:
    cols = ["gaze_err_est", "head_err_est", "ssim", "psnr", "lpips", "fid", "id_sim"]
    lines = [("| Method | Gaze ° ↓ | Head ° ↓ | SSIM ↑ | PSNR ↑ | LPIPS ↓ | FID ↓ | ID sim ↑ | Gaze ° vs label ↓ | "
             "Head ° vs label ↓ | Gaze ° (exact readout) mean / median ↓ | PSNR head ↑ | L1 ↓ |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def readout(s):
        return "–" if not s.get("gaze_err_readout_n", 1) or s.get("gaze_err_readout") is None or \
            math.isnan(s["gaze_err_readout"]) else f"{fmt(s['gaze_err_readout'], 2)} / {fmt(s['gaze_err_readout_median'], 2)}"

    for c in candidates(regimes):
        s = summary[c]
        vals = [fmt(s.get(k), 3 if k != "fid" else 2) for k in cols]
        vals += [fmt(s["gaze_err_label"]), fmt(s["head_err_label"]), readout(s), fmt(s["psnr_head"]),
                 fmt(s["l1"], 4)]
        lines.append(f"| {_name(c, finetune_steps)} | " + " | ".join(vals) + " |")
    f = summary["floor"]
    lines.append("| the ground-truth target (floor: estimator vs label; readout vs label) | 0 by definition | "
                 f"0 by definition | – | – | – | – | – | {fmt(f['gaze_err_label'])} | {fmt(f['head_err_label'])} | "
                 f"{readout(f)} | – | – |")
    ref = summary.get("id_reference") or {}
    for k, what in (("same_subject", "ID reference: same subject, target camera, another gaze"),
                    ("other_subject", "ID reference: **another subject**, target camera")):
        if not ref.get(f"{k}_n"):
            continue
        lines.append(f"| {what} | – | – | – | – | – | – | {fmt(ref.get(k))} | – | – | – | – | – |")
    return lines


def met(ok: bool) -> str:
    """A check's outcome for the report: "met" or "NOT met"."""
    return "met" if ok else "NOT met"


def _checks_lines(agg: dict, finetune_steps: int) -> list[str]:
    L = []
    for r, c in agg["checks"].items():
        against = "the true label" if c["key"] == "gaze_err_label" else "the estimator's reading of the target"
        if c["estimator"]:
            L.append(f"* **{_name(r, finetune_steps)}**, estimator (gaze error against {against}): {fmt(c['gaze_err'])}°")
        else:
            L.append(f"* **{_name(r, finetune_steps)}** (no estimator)")
        L += _estimator_check_lines(c) if c["estimator"] else []
        L += _readout_check_lines(c.get("readout"))
    return L


def _estimator_check_lines(c: dict) -> list[str]:
    L = [f"  * vs **no redirection** {fmt(c['no_redirection_gaze_err'])}° (ratio "
         f"{fmt(c['ratio_to_no_redirection'], 2)}; goal ≤ 0.5: **{met(c['at_most_half_of_no_redirection'])}**)"
         " — frozen eyes cannot pass this one: the no-redirection row gets the target's head pose too",
         f"  * vs copy the input {fmt(c['copy_input_gaze_err'])}° (ratio {fmt(c['ratio_to_copy_input'], 2)}; "
         f"goal ≤ 0.5: {met(c['at_most_half_of_copy_input'])})"]
    if c["key"] == "gaze_err_label":
        L.append(f"  * vs the estimator floor {fmt(c['floor_gaze_err_label'])}° (ratio {fmt(c['ratio_to_floor'], 2)}; "
                 f"aim ≤ 1.5: {met(c['within_1.5x_of_floor'])})")
    return L


def _readout_check_lines(ro: dict | None) -> list[str]:
    if not ro:
        return []
    return [f"  * **exact readout** (the generator's gaze that draws the render vs the requested eye-in-head gaze): "
            f"{fmt(ro['gaze_err'], 2)}° (median {fmt(ro['gaze_err_median'], 2)}°) vs no redirection "
            f"{fmt(ro['no_redirection_gaze_err'], 2)}° (ratio {fmt(ro['ratio_to_no_redirection'], 2)}; goal ≤ 0.5: "
            f"**{met(ro['at_most_half_of_no_redirection'])}**); the input's own gaze (copy the input, read in its view) "
            f"{fmt(ro['copy_input_gaze_err'], 2)}°",
            f"  * exact readout vs its floor {fmt(ro['floor'], 2)}° (the exact target read back): aim ≤ "
            f"{READOUT_FLOOR_FACTOR:g} × floor + {READOUT_FLOOR_SLACK_DEG:g}° = {fmt(ro['floor_bound'], 2)}°: "
            f"**{met(ro['within_floor_bound'])}**"]


def _identity_lines(o: dict, regimes: list[str], finetune_steps: int) -> list[str]:
    ref = o.get("id_reference") or {}
    if not ref.get("gap_n"):
        return ["No identity reference rows (identity is off, or the dataset has no other subject / no other gaze "
                "from the target cameras)."]
    L = [f"Identity similarity (dlib, cosine × 100) between the target and: the same subject from the target camera at "
         f"another gaze **{fmt(ref['same_subject'], 2)}**; **another subject** from the same camera "
         f"**{fmt(ref['other_subject'], 2)}** (paired gap {fmt(ref['gap'], 2)} ± {fmt(ref['gap_se'], 2)} s.e. over "
         f"{ref['gap_n']} pairs). Ours: " + ", ".join(f"{_name(r, finetune_steps).removeprefix('ours: ')} {fmt(o[r]['id_sim'], 2)}"
                                                     for r in regimes) + "."]
    if ref["informative"]:
        L.append(f"The gap is clear (≥ {ID_GAP_MIN:g} points and ≥ {ID_GAP_SE:g} s.e.): the metric tells these subjects "
                 "apart; an ID score near the other-subject row means the render lost the person.")
    else:
        L.append(f"**The identity metric is not informative on this data**: another subject seen from the same camera "
                 f"scores within {fmt(ref['gap'], 2)} points of the same subject (a clear gap needs ≥ {ID_GAP_MIN:g} "
                 f"points and ≥ {ID_GAP_SE:g} s.e.). It measures the view here, not the person; do not read the ID "
                 "column as identity preservation.")
    return L


def _has_readout(by_view: dict) -> bool:
    """Does any bin of ``aggregate``'s ``per_target_view`` hold exact-readout values (synthetic data)?"""
    return any(summ["floor"]["gaze_err_readout_n"] for summ in by_view.values())


def _target_view_lines(by_view: dict, regimes: list[str], finetune_steps: int) -> list[str]:
    """The exact readout split by how turned the target camera is (synthetic data; nothing without a readout)."""
    if not _has_readout(by_view):
        return []
    names = candidates(regimes)
    L = ["## Exact readout by the target camera's view", "",
         "Mean / median degrees per bin of the target camera's yaw seen from the face: a turned view shows a smaller, "
         "foreshortened eye (and a model's geometry error moves it more), so the overall mean is read with this split.",
         "", "| target view | pairs | " + " | ".join(_name(c, finetune_steps) for c in names) + " | floor |",
         "|---|---|" + "---|" * (len(names) + 1)]
    for view, summ in by_view.items():
        cells = [f"{fmt(summ[c]['gaze_err_readout'], 2)} / {fmt(summ[c]['gaze_err_readout_median'], 2)}" for c in names]
        cells.append(f"{fmt(summ['floor']['gaze_err_readout'], 2)} / {fmt(summ['floor']['gaze_err_readout_median'], 2)}")
        cell = view.replace("|", "\\|")  # the bin's name holds "|yaw|": escaped, or it splits the table's row
        L.append(f"| {cell} | {summ['pairs']} | " + " | ".join(cells) + " |")
    return L + [""]


def _code_init_line(cfg: dict, sources: list[str]) -> str:
    if cfg.get("code_init", "mean") == "mean":
        return ("Each input's fit starts from the checkpoint's mean latent code, as a photo's would without a face fit "
                "(`code_init: mean`).")
    if cfg["code_init"] == "landmarks":
        return ("Each input's fit starts from the shape code fitted to the input row's own 68 landmarks and the mean "
                "appearance (`code_init: landmarks`), as `FittingSingleImage.py` starts a photo from its face analysis. "
                "On synthetic data the stored landmarks are the generator's exact projections (a detector's would be noisier).")
    line = "Each input's fit starts from the row's stored latent code (`code_init: dataset`)."
    if "synthetic" in sources:
        line += (" **On synthetic data that code is the generator's, which the target row of the same subject shares:"
                 " privileged information a photo never has** (a photo's start is `code_init: landmarks`).")
    return line


def _controllability_lines(ctrl: dict | None) -> list[str]:
    if not (ctrl and ctrl.get("inputs")):
        return ["Not run (controllability.enabled is false)."]
    grid = (f"{len(ctrl['inputs'])} inputs × {len(ctrl['pitch'])}×{len(ctrl['yaw'])} requested eye-in-head gazes (pitch "
            f"{fmt(np.degrees(min(ctrl['pitch'])), 0)}…{fmt(np.degrees(max(ctrl['pitch'])), 0)}°, yaw "
            f"{fmt(np.degrees(min(ctrl['yaw'])), 0)}…{fmt(np.degrees(max(ctrl['yaw'])), 0)}°)")
    grid += (", each input's fit seen frontally (its camera turned about the head to head pose 0, 0; "
             "`controllability.view: input` draws it in the input's own camera)" if ctrl.get("view", "input") == "frontal"
             else ", each input's fit in its own camera (`controllability.view: input`)")
    L = []
    ign = ctrl.get("ignore_request") or {}
    ref = (f" — **ignoring the request** would score {fmt(ign.get('input_gaze_deg'), 2)}° (always the input's own "
           f"gaze) or {fmt(ign.get('grid_centre_deg'), 2)}° (always the grid's centre)")
    ro = ctrl.get("readout")
    if ro:
        L.append(f"* **Exact readout** (synthetic): requested vs read eye-in-head gaze, mean **{fmt(ro['mean_deg'], 2)}°** "
                 f"(median {fmt(ro['median_deg'], 2)}°) over {grid}{ref}; per subject: "
                 + ", ".join(f"{k}: {fmt(v, 2)}°" for k, v in ro["per_subject_mean_deg"].items()) + ".")
    if ctrl.get("mean_deg") is not None:
        L.append(f"* Estimator: angle between the requested gaze (turned into each input's camera frame) and the "
                 f"estimator's reading of the render, mean **{fmt(ctrl['mean_deg'], 2)}°** over {grid}{ref}; per subject: "
                 + ", ".join(f"{k}: {fmt(v, 2)}°" for k, v in ctrl["per_subject_mean_deg"].items()) + ".")
    L.append("A value near the ignore-the-request references says the rendered gaze does not follow the request. "
             "Map: `controllability.png`" + (" (heat maps and requested → read arrows)." if ro else "."))
    return L


def write_report_md(path: str, result: dict) -> None:
    """report.md: our table laid out like anchors.md's, then checks, identity, per subject, controllability,
    what was skipped and why, and the published ETH-XGaze rows under their own heading."""
    agg, cfg = result["aggregate"], result["config"]
    regimes = cfg["regimes"]
    o = agg["overall"]
    steps = cfg["finetune_steps"]
    sources = sorted(set(result["sources"].values()))
    L = [f"# Gaze-redirection evaluation: {cfg['checkpoint']}", "",
         (f"Data: `{cfg['dataset_dir']}`, subjects {result['subjects']} ({', '.join(sources)}); "
         f"{o['pairs']} input→target pairs ({o['pairs_with_gaze_label']} with a gaze label on the target), "
         f"{result['inputs']} distinct inputs, each fitted once per regime. Estimator: "
         + (f"`{cfg['estimator_checkpoint']}` ({result['estimator_input_size']} px)" if cfg["estimator_checkpoint"]
            else "none (estimator columns empty)")
         + ". Renders use the target row's camera (head pose) and gaze."), "",
         _code_init_line(cfg, sources), "",
         ("Gaze/Head ° are 3-D angles between the estimator's reading of the render and its reading of the target "
         "image (as the papers measure them); \"vs label\" compares the reading of the render with the target's "
         "true label (rows with labels only). SSIM, PSNR, L1 on the whole image (target whitened outside its head "
         "mask), PSNR head on the target's head mask. ID sim = cosine of dlib 128-d embeddings × 100. "
         "Gaze ° (exact readout), synthetic data only: the eye-in-head gaze at which the generator's own render of the "
         "target view best matches the image's eye pixels, against the requested eye-in-head gaze (no learned "
         "estimator: it reads 64 px eyes; its floor is the exact target read back). "
         "The no-redirection rows render the same fit from the target camera with the input's eye-in-head gaze kept: "
         "redirection has to beat them, not only \"copy the input\"."), "",
         "## Results (mean over pairs)", ""]
    L += _main_table(o, regimes, steps)
    L += ["", "## Checks: did the eyes move where they were asked?", ""]
    L += _checks_lines(agg, steps)
    L += ["", "## Identity: is the metric informative here?", ""]
    L += _identity_lines(o, regimes, steps)
    L += ["", "## Training subjects", ""]
    for what, note in (result.get("training_check") or {}).items():
        L.append(f"* {what}: {note}")
    L += ["", "## Per subject", ""]
    for s, summ in agg["per_subject"].items():
        L += [f"### Subject {s} ({result['sources'].get(s, '?')}, {summ['pairs']} pairs)", ""]
        L += _main_table(summ, regimes, steps) + [""]
    L += _target_view_lines(agg.get("per_target_view") or {}, regimes, steps)
    ctrl = result.get("controllability")
    L += ["## Gaze controllability", ""]
    L += _controllability_lines(ctrl)
    L += ["", "## Metrics used, skipped, and why", ""]
    for k, why in result["metric_notes"].items():
        L.append(f"* **{k}**: {why}")
    for c in candidates(regimes):
        rate = o[c].get("id_face_found_rate")
        if rate is not None and not (isinstance(rate, float) and math.isnan(rate)):
            L.append(f"* dlib's HOG detector found a face in {100 * rate:.0f}% of the {_name(c, steps)} images "
                     "(the whole image was the face box otherwise)")
    L += ["", "Timing: " + ", ".join(f"{NAMES[r]} fit {fmt(result['timing'].get(r), 1)} s per input" for r in regimes)
          + f"; evaluation wall time {fmt(result.get('seconds'), 0)} s (this run; resumed runs count only their part).", ""]
    L += ["## Published ETH-XGaze results — NOT the same data, for orientation only", "",
          ("These rows are from the papers (anchors.md §1: ETH-XGaze, 15 person-specific subjects × 100 pairs, 512 px, "
          "GazeNeRF's ResNet-50 estimator, FaceX-Zoo identity). They are **not comparable** with the table above: "
          "different data, image size, estimator, identity network and FID backbone."), "",
          "| System | Gaze ° ↓ | Head ° ↓ | SSIM ↑ | PSNR ↑ | LPIPS ↓ | FID ↓ | ID sim ↑ | source |",
          "|---|---|---|---|---|---|---|---|---|"]
    for row in PUBLISHED_XGAZE:
        L.append(f"| {row[0]} | " + " | ".join(f"{v:.3f}" for v in row[1:8]) + f" | {row[8]} |")
    L += ["", "Files: `per_pair.jsonl` (every pair), `metrics.json` (config, checkpoint sha256s, per-subject and mean "
          "values), `pairs.txt`, `grid.png` (input | target | renders), `gaze_error_vs_redirection.png`"
          + (", `controllability.png`" if ctrl and ctrl.get("inputs") else "") + ".", ""]
    atomic_write_text(path, "\n".join(L))


def summary_lines(agg: dict, regimes: list[str], ctrl: dict | None) -> list[str]:
    """The run's closing log lines: per regime the readout and estimator checks, identity, controllability."""
    o, lines = agg["overall"], []
    for r in regimes:
        c = agg["checks"][r]
        ro = c.get("readout")
        if ro:
            lines.append(
                f"{NAMES[r]}: exact readout {fmt(ro['gaze_err'], 2)}° (median "
                f"{fmt(ro['gaze_err_median'], 2)}°), no redirection {fmt(ro['no_redirection_gaze_err'], 2)}° "
                f"(ratio {fmt(ro['ratio_to_no_redirection'], 2)}: {met(ro['at_most_half_of_no_redirection'])}), "
                f"floor {fmt(ro['floor'], 2)}° (bound {fmt(ro['floor_bound'], 2)}°: {met(ro['within_floor_bound'])})")
        if not c["estimator"]:
            continue
        lines.append(
            f"{NAMES[r]}: gaze {fmt(o[r]['gaze_err_est'])}° vs estimator on target, "
            f"{fmt(o[r]['gaze_err_label'])}° vs label (no redirection {fmt(c['no_redirection_gaze_err'])}°: "
            f"ratio {fmt(c['ratio_to_no_redirection'], 2)}, goal <= 0.5 {met(c['at_most_half_of_no_redirection'])}; "
            f"copy input {fmt(c['copy_input_gaze_err'])}°, estimator floor {fmt(c['floor_gaze_err_label'])}°), "
            f"head {fmt(o[r]['head_err_est'])}°, SSIM {fmt(o[r]['ssim'])}, PSNR {fmt(o[r]['psnr'], 2)} dB")
    by_view = agg.get("per_target_view") or {}
    for r in regimes if _has_readout(by_view) else ():
        lines.append(f"{NAMES[r]}: exact readout by target view (model / no redirection, mean °, pairs): " + "; ".join(
            f"{view} {fmt(v[r]['gaze_err_readout'], 2)} / {fmt(v[no_redirection(r)]['gaze_err_readout'], 2)} "
            f"({v['pairs']})" for view, v in by_view.items()))
    ref = o["id_reference"]
    if ref["gap_n"]:
        lines.append(
            f"identity: ours {', '.join(fmt(o[r]['id_sim'], 1) for r in regimes)}; same subject "
            f"{fmt(ref['same_subject'], 1)}, another subject from the same camera {fmt(ref['other_subject'], 1)}"
            f" -> {'informative' if ref['informative'] else 'NOT informative on this data'}")
    if ctrl and ctrl.get("inputs"):
        ign = ctrl.get("ignore_request") or {}
        ro = ctrl.get("readout") or {}
        lines.append(
            f"controllability over {len(ctrl['inputs'])} inputs: exact readout {fmt(ro.get('mean_deg'), 2)}°, "
            f"estimator {fmt(ctrl.get('mean_deg'), 2)}° (ignoring the request: {fmt(ign.get('input_gaze_deg'), 2)}° "
            f"with the input's gaze, {fmt(ign.get('grid_centre_deg'), 2)}° with the grid centre)")
    return lines


def plot_gaze_vs_redirection(records: list[dict], regimes: list[str], path: str) -> None:
    """Scatter + binned means of the gaze error (vs label, else vs the estimator on the target) against the
    redirection angle between input and target gaze."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    x = np.array([r["redirection_deg"] for r in records], dtype=float)
    use_readout = bool(records) and all(r.get("requested_gaze_head") is not None for r in records)
    use_label = all(r["gaze_labelled"] for r in records)
    key = "gaze_err_readout" if use_readout else "gaze_err_label" if use_label else "gaze_err_est"
    colors = {"codes": "tab:blue", "finetune": "tab:green", "copy_input": "tab:gray",
              "codes_no_redirection": "tab:orange", "finetune_no_redirection": "tab:red"}
    edges = np.linspace(0, max(np.nanmax(x) if len(x) else 1.0, 1e-6), 7)
    for c in candidates(regimes):
        y = np.array([r[c][key] for r in records], dtype=float)
        ax.scatter(x, y, s=10, alpha=0.35, color=colors[c])
        idx = np.clip(np.digitize(x, edges) - 1, 0, len(edges) - 2)
        centers, means = [], []
        for b in range(len(edges) - 1):
            sel = (idx == b) & ~np.isnan(y)
            if sel.any():
                centers.append(x[sel].mean())
                means.append(y[sel].mean())
        ax.plot(centers, means, "-o", color=colors[c], label=NAMES.get(c, c))
    floor = np.array([r["floor"].get(key, np.nan) for r in records if r["gaze_labelled"]], dtype=float)
    if key != "gaze_err_est" and np.isfinite(floor).any():
        ax.axhline(float(np.nanmean(floor)), color="k", ls="--", lw=1,
                   label=("readout" if use_readout else "estimator") + " floor (exact target)")
    ax.set_xlabel("redirection angle between input and target gaze (deg)")
    ax.set_ylabel({"gaze_err_readout": "gaze error, exact readout vs request", "gaze_err_label": "gaze error vs label",
                   "gaze_err_est": "gaze error vs estimator on target"}[key] + " (deg)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    finally:
        plt.close(fig)


def save_pair_grid(path: str, images: dict, order: list[str]) -> None:
    """One row: input | target | render per regime (PNG, atomically)."""
    import imageio.v2 as imageio  # lazy: only the figures need it

    row = np.concatenate([to_uint8(images[k][0]) for k in order], axis=1)
    atomic_write(path, lambda tmp: imageio.imwrite(tmp, row))


def combine_grids(paths: list[str], out_path: str, header: list[str]) -> None:
    """Stack per-pair rows into one grid PNG with a title bar naming the columns."""
    import imageio.v2 as imageio
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [imageio.imread(p) for p in paths if os.path.isfile(p)]
    if not rows:
        return
    grid = np.concatenate(rows, axis=0)
    h, w = grid.shape[:2]
    scale = max(1.0, 384 / w)
    fig = plt.figure(figsize=(w * scale / 100, h * scale / 100 + 0.35), dpi=100)
    ax = fig.add_axes([0, 0, 1, h * scale / (h * scale + 35)])
    ax.imshow(grid, interpolation="nearest")
    ax.axis("off")
    n = len(header)
    for i, name in enumerate(header):
        fig.text((i + 0.5) / n, 0.995, name, ha="center", va="top", fontsize=8)
    try:
        atomic_write(out_path, lambda tmp: fig.savefig(tmp, dpi=100))
    finally:
        plt.close(fig)
