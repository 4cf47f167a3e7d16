#!/usr/bin/env python
"""Gen_mask_lm_3DMM.py — not implemented yet.

Preprocessing of ETH-XGaze / photo folders into the processed HDF5 layout
(docs/data_format.md: head mask, periocular eye masks, landmarks, camera/head pose and
latent-code initialisation from our parametric head model) arrives with the preprocessing
issue. Until then, use DataProcess/make_synthetic_dataset.py; this script exits with status 2.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":
    from HeadNeRF.placeholder import not_implemented_main

    sys.exit(not_implemented_main("Gen_mask_lm_3DMM.py", __doc__))
