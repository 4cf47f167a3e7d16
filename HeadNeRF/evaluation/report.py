"""Results on disk: the resumable per-pair log, the aggregate, and the human-readable report.

* ``per_pair.jsonl``: one JSON object per finished pair, appended (flushed and fsynced) as
  pairs finish. :func:`read_records` drops a torn last line (a kill during the write) and
  truncates the file to the last complete record, so a re-run appends cleanly.
* ``metrics.json``, ``report.md``, ``grid.png``, ``gaze_error_vs_redirection.png`` are written
  at the end only, each atomically (temp file + ``os.replace``): an interrupted run never
  leaves a complete-looking report.
* Aggregation reads only the records (plus the per-pair FID feature files), never in-memory
  state, so a resumed run and an uninterrupted one give equal numbers.
"""

import json
import math
import os

import numpy as np

__all__ = [
    "METRIC_KEYS",
    "PUBLISHED_XGAZE",
    "aggregate",
    "append_record",
    "atomic_write_json",
    "atomic_write_text",
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

def atomic_write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _json_safe(x):
    """NaN -> None, ±inf -> "inf"/"-inf" (strict JSON for metrics.json)."""
    if isinstance(x, float):
        if math.isnan(x):
            return None
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return x
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.generic):
        return _json_safe(x.item())
    return x


def atomic_write_json(path: str, obj) -> None:
    atomic_write_text(path, json.dumps(_json_safe(obj), indent=2, allow_nan=False) + "\n")


def read_records(path: str) -> dict[int, dict]:
    """Finished pairs by pair index. A torn last line is dropped and the file truncated to the last good record."""
    out: dict[int, dict] = {}
    if not os.path.isfile(path):
        return out
    good = 0
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:
            break  # no newline: a torn write
        try:
            rec = json.loads(data[pos:end])
        except ValueError:
            break
        out[int(rec["pair"])] = rec
        pos = good = end + 1
    if good < len(data):
        with open(path, "r+b") as f:
            f.truncate(good)
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


def _summary(records: list[dict], candidates: list[str]) -> dict:
    out = {}
    for c in candidates:
        entry = {}
        for k in METRIC_KEYS:
            entry[k], entry[f"{k}_n"] = _mean([r[c].get(k) for r in records])
        found = [r[c].get("id_face_found") for r in records if r[c].get("id_face_found") is not None]
        entry["id_face_found_rate"] = float(np.mean(found)) if found else math.nan
        if c in ("codes", "finetune"):  # (fit_seconds is timing, kept out of the aggregate: see timing())
            entry["fit_psnr_head"], _ = _mean([r[c].get("fit_psnr_head") for r in records])
        out[c] = entry
    floor = {}
    for k in ("gaze_err_label", "head_err_label"):
        floor[k], floor[f"{k}_n"] = _mean([r["floor"][k] for r in records])
    out["floor"] = floor
    out["pairs"] = len(records)
    out["pairs_with_gaze_label"] = int(sum(bool(r["gaze_labelled"]) for r in records))
    return out


def timing(records: list[dict], regimes: list[str]) -> dict:
    """Mean fit seconds per input and regime (wall clock: differs between runs, so not in the aggregate)."""
    return {r: _mean([rec[r].get("fit_seconds") for rec in records])[0] for r in regimes}


def aggregate(records: list[dict], regimes: list[str], fid: dict | None = None) -> dict:
    """Per-subject and overall means (over pairs) of every metric, for the regimes and the baselines.

    ``fid``: optional {"overall": {candidate: value}, "per_subject": {subject: {candidate: value}}}.
    """
    candidates = list(regimes) + ["copy_input"]
    records = sorted(records, key=lambda r: r["pair"])
    out = {"overall": _summary(records, candidates), "per_subject": {}}
    for s in sorted({r["subject"] for r in records}):
        out["per_subject"][str(s)] = _summary([r for r in records if r["subject"] == s], candidates)
    for c in candidates:
        out["overall"][c]["fid"] = (fid or {}).get("overall", {}).get(c, math.nan)
        for s in out["per_subject"]:
            out["per_subject"][s][c]["fid"] = (fid or {}).get("per_subject", {}).get(s, {}).get(c, math.nan)
    o = out["overall"]
    checks = {}
    copy_err, floor_err = o["copy_input"]["gaze_err_label"], o["floor"]["gaze_err_label"]
    for r in regimes:
        e = o[r]["gaze_err_label"]
        checks[r] = {
            "gaze_err_label": e, "copy_input_gaze_err_label": copy_err, "floor_gaze_err_label": floor_err,
            "ratio_to_copy_input": e / copy_err if copy_err and not math.isnan(copy_err) else math.nan,
            "ratio_to_floor": e / floor_err if floor_err and not math.isnan(floor_err) else math.nan,
        }
        checks[r]["at_most_half_of_copy_input"] = bool(checks[r]["ratio_to_copy_input"] <= 0.5)
        checks[r]["within_1.5x_of_floor"] = bool(checks[r]["ratio_to_floor"] <= 1.5)
    out["checks"] = checks
    return out


# --------------------------------------------------------------------------------------- report

def _fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:.{digits}f}"


NAMES = {"codes": "ours: latent codes only", "finetune": "ours: codes + fine-tuning", "copy_input": "copy the input (baseline)"}


def _main_table(summary: dict, regimes: list[str], finetune_steps: int) -> list[str]:
    cols = ["gaze_err_est", "head_err_est", "ssim", "psnr", "lpips", "fid", "id_sim"]
    lines = [("| Method | Gaze ° ↓ | Head ° ↓ | SSIM ↑ | PSNR ↑ | LPIPS ↓ | FID ↓ | ID sim ↑ | Gaze ° vs label ↓ | "
             "Head ° vs label ↓ | PSNR head ↑ | L1 ↓ |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in list(regimes) + ["copy_input"]:
        s = summary[c]
        name = NAMES[c] + (f" ({finetune_steps} steps)" if c == "finetune" else "")
        vals = [_fmt(s.get(k), 3 if k != "fid" else 2) for k in cols]
        vals += [_fmt(s["gaze_err_label"]), _fmt(s["head_err_label"]), _fmt(s["psnr_head"]), _fmt(s["l1"], 4)]
        lines.append(f"| {name} | " + " | ".join(vals) + " |")
    f = summary["floor"]
    lines.append("| estimator on the ground-truth target (floor) | 0 by definition | 0 by definition | – | – | – | – | – | "
                 f"{_fmt(f['gaze_err_label'])} | {_fmt(f['head_err_label'])} | – | – |")
    return lines


def write_report_md(path: str, result: dict) -> None:
    """report.md: our table laid out like anchors.md's, then checks, per subject, controllability,
    what was skipped and why, and the published ETH-XGaze rows under their own heading."""
    agg, cfg = result["aggregate"], result["config"]
    regimes = cfg["regimes"]
    o = agg["overall"]
    L = [f"# Gaze-redirection evaluation: {cfg['checkpoint']}", "",
         (f"Data: `{cfg['dataset_dir']}`, subjects {result['subjects']} ({', '.join(sorted(set(result['sources'].values())))}); "
         f"{o['pairs']} input→target pairs ({o['pairs_with_gaze_label']} with a gaze label on the target), "
         f"{result['inputs']} distinct inputs, each fitted once per regime. Estimator: `{cfg['estimator_checkpoint']}` "
         f"({result['estimator_input_size']} px). Renders use the target row's camera (head pose) and gaze."), "",
         ("Gaze/Head ° are 3-D angles between the estimator's reading of the render and its reading of the target "
         "image (as the papers measure them); \"vs label\" compares the reading of the render with the target's "
         "true label (rows with labels only). SSIM, PSNR, L1 on the whole image (target whitened outside its head "
         "mask), PSNR head on the target's head mask. ID sim = cosine of dlib 128-d embeddings × 100."), "",
         "## Results (mean over pairs)", ""]
    L += _main_table(o, regimes, cfg["finetune_steps"])
    L += ["", "## Quickstart check: redirected gaze error against the true label", ""]
    for r, c in agg["checks"].items():
        L.append(f"* **{NAMES[r]}**: {_fmt(c['gaze_err_label'])}° vs copy-input {_fmt(c['copy_input_gaze_err_label'])}° "
                 f"(ratio {_fmt(c['ratio_to_copy_input'], 2)}; goal ≤ 0.5: "
                 f"{'met' if c['at_most_half_of_copy_input'] else 'NOT met'}), estimator floor "
                 f"{_fmt(c['floor_gaze_err_label'])}° (ratio {_fmt(c['ratio_to_floor'], 2)}; aim ≤ 1.5: "
                 f"{'met' if c['within_1.5x_of_floor'] else 'not met'})")
    L += ["", "## Per subject", ""]
    for s, summ in agg["per_subject"].items():
        L += [f"### Subject {s} ({result['sources'].get(s, '?')}, {summ['pairs']} pairs)", ""]
        L += _main_table(summ, regimes, cfg["finetune_steps"]) + [""]
    ctrl = result.get("controllability")
    L += ["## Gaze controllability", ""]
    if ctrl and ctrl.get("inputs"):
        L.append("Mean angular error between the requested gaze (an eye-in-head grid, turned into each input's camera "
                 f"frame) and the estimator's reading of the render: "
                 f"**{_fmt(ctrl['mean_deg'], 2)}°** over {len(ctrl['inputs'])} inputs × "
                 f"{len(ctrl['pitch'])}×{len(ctrl['yaw'])} requested gazes (pitch {_fmt(np.degrees(min(ctrl['pitch'])), 0)}…"
                 f"{_fmt(np.degrees(max(ctrl['pitch'])), 0)}°, yaw {_fmt(np.degrees(min(ctrl['yaw'])), 0)}…"
                 f"{_fmt(np.degrees(max(ctrl['yaw'])), 0)}°); per subject: "
                 + ", ".join(f"{k}: {_fmt(v, 2)}°" for k, v in ctrl["per_subject_mean_deg"].items())
                 + ". Map: `controllability.png`.")
    else:
        L.append("Not run (controllability.enabled is false).")
    L += ["", "## Metrics used, skipped, and why", ""]
    for k, why in result["metric_notes"].items():
        L.append(f"* **{k}**: {why}")
    for c in list(regimes) + ["copy_input"]:
        rate = o[c].get("id_face_found_rate")
        if rate is not None and not (isinstance(rate, float) and math.isnan(rate)):
            L.append(f"* dlib's HOG detector found a face in {100 * rate:.0f}% of the {NAMES[c]} images "
                     "(the whole image was the face box otherwise)")
    L += ["", "Timing: " + ", ".join(f"{NAMES[r]} fit {_fmt(result['timing'].get(r), 1)} s per input" for r in regimes)
          + f"; evaluation wall time {_fmt(result.get('seconds'), 0)} s (this run; resumed runs count only their part).", ""]
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


def plot_gaze_vs_redirection(records: list[dict], regimes: list[str], path: str) -> None:
    """Scatter + binned means of the gaze error (vs label, else vs the estimator on the target) against the
    redirection angle between input and target gaze."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    x = np.array([r["redirection_deg"] for r in records], dtype=float)
    use_label = all(r["gaze_labelled"] for r in records)
    key = "gaze_err_label" if use_label else "gaze_err_est"
    colors = {"codes": "tab:blue", "finetune": "tab:green", "copy_input": "tab:gray"}
    edges = np.linspace(0, max(np.nanmax(x) if len(x) else 1.0, 1e-6), 7)
    for c in list(regimes) + ["copy_input"]:
        y = np.array([r[c][key] for r in records], dtype=float)
        ax.scatter(x, y, s=10, alpha=0.35, color=colors[c])
        idx = np.clip(np.digitize(x, edges) - 1, 0, len(edges) - 2)
        centers, means = [], []
        for b in range(len(edges) - 1):
            sel = (idx == b) & ~np.isnan(y)
            if sel.any():
                centers.append(x[sel].mean())
                means.append(y[sel].mean())
        ax.plot(centers, means, "-o", color=colors[c], label=NAMES[c])
    floor = [r["floor"]["gaze_err_label"] for r in records if r["gaze_labelled"]]
    if use_label and floor:
        ax.axhline(float(np.mean(floor)), color="k", ls="--", lw=1, label="estimator floor (target vs label)")
    ax.set_xlabel("redirection angle between input and target gaze (deg)")
    ax.set_ylabel("gaze error " + ("vs label" if use_label else "vs estimator on target") + " (deg)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def _to_uint8(img) -> np.ndarray:
    from .metrics import to_uint8

    return to_uint8(img[0])


def save_pair_grid(path: str, images: dict, order: list[str]) -> None:
    """One row: input | target | render per regime (PNG, atomically)."""
    import imageio.v2 as imageio

    row = np.concatenate([_to_uint8(images[k]) for k in order], axis=1)
    tmp = path + ".tmp.png"
    imageio.imwrite(tmp, row)
    os.replace(tmp, path)


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
    tmp = out_path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out_path)
