#!/usr/bin/env python
"""Evaluation.py — not implemented yet.

Gaze-redirection evaluation (gaze/head-pose error, SSIM/PSNR/LPIPS, identity) against the
synthetic ground truth and ETH-XGaze arrives with the evaluation issue.
Until then this script only explains that and exits with status 2.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

if __name__ == "__main__":
    from HeadNeRF.placeholder import not_implemented_main

    sys.exit(not_implemented_main("Evaluation.py", __doc__))
