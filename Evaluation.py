#!/usr/bin/env python
"""Evaluation.py — not implemented yet.

Gaze-redirection evaluation (gaze/head-pose error, SSIM/PSNR/LPIPS, identity) against the
synthetic ground truth and ETH-XGaze arrives with the evaluation issue.
Until then this script only explains that and exits with status 2.
"""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_known_args(argv)
    print("Evaluation.py: not implemented yet in this version; see README 'Status'", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
