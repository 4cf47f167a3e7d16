#!/usr/bin/env python
"""Train the gaze/head-pose estimator (a ResNet) from a YAML config; it reports its own held-out error.

    python train_gaze_estimator.py --config_file config/gaze_estimator_quickstart.yml
    python train_gaze_estimator.py --config_file config/gaze_estimator_quickstart.yml --resume runs/gaze_estimator_quickstart
    python train_gaze_estimator.py --config_file config/gaze_estimator_quickstart.yml --auto_resume   # start, continue or reuse
    python train_gaze_estimator.py --config_file config/gaze_estimator_quickstart.yml --make_data_only

Outputs in the run dir: checkpoints/last.pt (load it with HeadNeRF.estimator.load_estimator),
config.yaml (resolved), report.json (held-out gaze / head-pose angular error), tb/ (tensorboard).
Bad input (a YAML typo, a missing dataset or pretrained-weights file, a checkpoint of another
run) ends with one line on stderr and exit code 2; nothing in the run directory is overwritten.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_file", required=True, help="YAML estimator config (config/gaze_estimator*.yml)")
    parser.add_argument("--resume", default=None, metavar="RUN_DIR",
                        help="continue a run from RUN_DIR/checkpoints/last.pt (or a checkpoint file) exactly where "
                             "it stopped; a finished run only rewrites its report.json")
    parser.add_argument("--auto_resume", action="store_true",
                        help="resume the config's run_dir when it holds a checkpoint, else start it (for scripts "
                             "that are re-run after an interruption)")
    parser.add_argument("--make_data_only", action="store_true",
                        help="only make the config's synthetic set (data.synthetic) in data.dataset_dir when it is "
                             "missing, then exit")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate the config and the data, print the resolved config, and exit")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="override the config's device")
    parser.add_argument("--run_dir", default=None, help="override the config's run_dir")
    parser.add_argument("--dataset_dir", default=None, help="override the config's data.dataset_dir")
    parser.add_argument("--steps", type=int, default=None, help="override the config's number of steps")
    parser.add_argument("--stop_after_steps", type=int, default=None, metavar="N",
                        help="stop with a checkpoint after N steps (the LR schedule still follows the config's steps); "
                             "--resume continues exactly")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bars (for logs)")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be >= 1")
    if args.resume and args.auto_resume:
        parser.error("--resume and --auto_resume exclude each other")

    from HeadNeRF.checkpoint import LAST_CHECKPOINT, CheckpointError
    from HeadNeRF.config import ConfigError, load_yaml
    from HeadNeRF.data.layout import DataFormatError
    from HeadNeRF.estimator import (
        EstimatorConfig,
        make_estimator_dataset,
        train_estimator,
    )
    from HeadNeRF.loop import TrainingAborted

    try:
        cfg = load_yaml(args.config_file, EstimatorConfig)
        for key in ("device", "run_dir", "steps"):
            if getattr(args, key) is not None:
                setattr(cfg, key, getattr(args, key))
        if args.dataset_dir:
            cfg.data.dataset_dir = args.dataset_dir
        if args.make_data_only:
            s = cfg.data.synthetic
            out = make_estimator_dataset(cfg.data.dataset_dir, s.num_subjects, s.num_cameras, s.num_frames,
                                         s.image_size, s.seed, s.supersample, s.workers, progress=not args.no_progress)
            print(f"[estimator data] {'reusing' if out['skipped'] else 'made'} {cfg.data.dataset_dir}"
                  + ("" if out["skipped"] else f": {out['images']} images in {out['seconds']:.0f} s"))
            return 0
        resume = args.resume
        if args.auto_resume and os.path.isfile(os.path.join(cfg.run_dir, LAST_CHECKPOINT)):
            resume = cfg.run_dir
            print(f"[estimator] continuing the run in {resume}")
        train_estimator(cfg, resume=resume, dry_run=args.dry_run, progress=not args.no_progress,
                        stop_after=args.stop_after_steps)
    except (ConfigError, DataFormatError, CheckpointError, ValueError) as exc:
        print(f"train_gaze_estimator.py: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
              file=sys.stderr)
        return 2
    except TrainingAborted as exc:
        print(f"train_gaze_estimator.py: aborted: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
