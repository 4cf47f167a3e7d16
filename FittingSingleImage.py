#!/usr/bin/env python
"""FittingSingleImage.py — not implemented yet.

Single-photo fitting (latent codes from one image, then new views, gazes and interpolations)
arrives with the fitting issue.
Until then this script only explains that and exits with status 2.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

if __name__ == "__main__":
    from HeadNeRF.placeholder import not_implemented_main

    sys.exit(not_implemented_main("FittingSingleImage.py", __doc__))
