#!/usr/bin/env python
"""Train a gaze-controllable head NeRF from a YAML config.

    python train_headnerf.py --config_file config/quickstart.yml
    python train_headnerf.py --config_file config/quickstart.yml --resume runs/quickstart
    torchrun --nproc_per_node 2 train_headnerf.py --config_file config/quickstart.yml   # DDP

Bad input (a YAML typo, a wrong type, a missing dataset, an HDF5 of another layout, a
checkpoint of another model) ends with one line on stderr and exit code 2; nothing in the
run directory is overwritten.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config_file", required=True, help="YAML training config (see config/*.yml and README 'Configs')")
    parser.add_argument("--resume", default=None, metavar="RUN_DIR",
                        help="continue a run from RUN_DIR/checkpoints/last.pt (or a checkpoint file) exactly where it stopped")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate the config, the dataset and the model, print the resolved config, and exit")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="override the config's device")
    parser.add_argument("--run_dir", default=None, help="override the config's run_dir (where checkpoints and logs go)")
    parser.add_argument("--steps", type=int, default=None, help="override the config's number of steps")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar (for logs)")
    args = parser.parse_args(argv)

    from HeadNeRF.checkpoint import CheckpointError
    from HeadNeRF.config import ConfigError, load_yaml
    from HeadNeRF.data.layout import DataFormatError
    from HeadNeRF.loop import TrainingAborted
    from HeadNeRF.training import train

    try:
        cfg = load_yaml(args.config_file)
        if args.device:
            cfg.device = args.device
        if args.run_dir:
            cfg.run_dir = args.run_dir
        if args.steps is not None:
            if args.steps < 1:
                parser.error("--steps must be >= 1")
            cfg.steps = args.steps
        train(cfg, resume=args.resume, dry_run=args.dry_run, progress=not args.no_progress)
    except (ConfigError, DataFormatError, CheckpointError) as exc:
        print(f"train_headnerf.py: error: {exc}", file=sys.stderr)
        return 2
    except TrainingAborted as exc:
        print(f"train_headnerf.py: aborted: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
