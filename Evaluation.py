#!/usr/bin/env python
"""Evaluate gaze redirection with the GazeNeRF protocol (fit each input, render at the target's gaze and
head pose, score against the target), plus a gaze-controllability map.

    python Evaluation.py --config_file_path config/quickstart_evaluation.yml
    python Evaluation.py --config_file_path config/full_evaluation.yml --device cuda

Writes into the config's results_dir: per_pair.jsonl (appended as pairs finish; running the same
command again continues where the last run stopped), and at the end metrics.json, report.md,
pairs.txt, grid.png, gaze_error_vs_redirection.png, controllability.png. On synthetic data the
exact gaze readout measures gaze beside the estimator (which is then optional). Bad input (a missing
checkpoint, an estimator of another input size, a NeRF or estimator trained on an evaluated subject,
a pairs file naming missing rows, a subject without valid rows, a config typo, a results dir of
another configuration or with a damaged per_pair.jsonl line, a results dir another evaluation is
writing into) ends with one line on stderr and exit code 2.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_file_path", required=True,
                        help="YAML evaluation config (config/quickstart_evaluation.yml, config/full_evaluation.yml)")
    parser.add_argument("--checkpoint", default=None, help="override the config's NeRF checkpoint (run dir or .pt)")
    parser.add_argument("--estimator_checkpoint", default=None,
                        help="override the config's gaze-estimator checkpoint (run dir or .pt); \"\" = none "
                             "(synthetic data: the exact gaze readout alone measures gaze)")
    parser.add_argument("--results_dir", default=None, help="override the config's results_dir")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="override the config's device")
    parser.add_argument("--max_new_pairs", type=int, default=None,
                        help="stop after this many newly scored pairs (the next run continues); for tests and slicing")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bars (for logs)")
    args = parser.parse_args(argv)
    if args.max_new_pairs is not None and args.max_new_pairs < 1:
        parser.error("--max_new_pairs must be >= 1")

    from HeadNeRF.config import ConfigError
    from HeadNeRF.evaluation import EvaluationError, evaluate, load_eval_config

    try:
        cfg = load_eval_config(args.config_file_path)
        for k in ("checkpoint", "results_dir", "device"):
            if getattr(args, k):
                setattr(cfg, k, getattr(args, k))
        if args.estimator_checkpoint is not None:  # "" = no estimator (synthetic data: the exact readout alone)
            cfg.estimator_checkpoint = args.estimator_checkpoint
        evaluate(cfg, max_new_pairs=args.max_new_pairs, progress=not args.no_progress)
    except (ConfigError, EvaluationError) as exc:
        print(f"Evaluation.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
