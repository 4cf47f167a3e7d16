#!/usr/bin/env python
"""Gen_mask_lm_3DMM.py — not implemented yet.

Preprocessing of ETH-XGaze / photo folders into the processed HDF5 layout
(docs/data_format.md: head mask, periocular eye masks, landmarks, camera/head pose and
latent-code initialisation from our parametric head model) arrives with the preprocessing
issue. Until then, use DataProcess/make_synthetic_dataset.py; this script exits with status 2.
"""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_known_args(argv)
    print("Gen_mask_lm_3DMM.py: not implemented yet in this version; see README 'Status'", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
