"""HeadNeRF_Gaze: a gaze-conditioned head NeRF for 3D-aware gaze redirection.

Data flows one way: HDF5 row (``data``) -> camera + codes + gaze -> rays and samples
(``rendering``) -> fields (``fields``) -> volume rendering -> 2-D neural renderer ->
image -> losses. ``models`` composes the pieces; ``training`` runs the loop.

Floors (a module imports only from floors below its own; there are no cycles; ``tests`` check
the graph is acyclic and that nothing imports ``training``):

0. ``config``, ``geometry/``, ``metrics``, ``shapes``, ``run_lock``, ``memory``, ``cli_checks``: nothing of the package;
1. ``atomic_io`` (run_lock), ``rendering/`` (geometry, shapes), ``loop`` (config), ``losses`` (config, metrics);
2. ``checkpoint``, ``image_io`` (atomic_io), ``data/`` (atomic_io, geometry), ``fields/``, ``neural_renderer`` (rendering);
3. ``face/`` (data, geometry), ``run_dir`` (checkpoint, loop), ``models`` (fields, neural_renderer, rendering, shapes);
4. ``preprocess/`` (face, data), ``eyewarp/`` (face, data, image_io), ``estimator/`` (run_dir, checkpoint, data);
5. ``fitting/`` (models, estimator, eyewarp, face and below);
6. ``evaluation/`` (fitting, estimator and below; the exact readout, the exact-render measurements of the
   training report and the fit, the photo warp's synthetic measurement);
7. ``training`` (imported only by ``train_headnerf.py`` and its tests).

The top-level scripts (``train_headnerf.py``, ``Evaluation.py``, ``FittingSingleImage.py``,
``train_gaze_estimator.py``, ``DataProcess/*.py``) parse arguments and call one package function.
"""

__version__ = "0.1.0"
