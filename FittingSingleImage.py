#!/usr/bin/env python
"""FittingSingleImage.py — not implemented yet.

Single-photo fitting (latent codes from one image, then new views, gazes and interpolations)
arrives with the fitting issue.
Until then this script only explains that and exits with status 2.
"""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_known_args(argv)
    print("FittingSingleImage.py: not implemented yet in this version; see README 'Status'", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
