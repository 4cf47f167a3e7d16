"""HeadNeRF_Gaze: a gaze-conditioned head NeRF for 3D-aware gaze redirection.

Data flows one way: HDF5 row (``data``) -> camera + codes + gaze -> rays and samples
(``rendering``) -> fields (``fields``) -> volume rendering -> 2-D neural renderer ->
image -> losses. ``models`` composes the pieces; ``training`` runs the loop.

Floors (a module may import only from floors below its own; no cycles):

0. ``run_lock``, ``shapes``, ``cli_checks``, ``geometry/``, ``config``, ``metrics``: nothing of the package
   (``atomic_io`` imports only ``run_lock``);
1. ``checkpoint`` (atomic_io), ``rendering/`` (geometry, shapes), ``data/`` (geometry, atomic_io),
   ``loop``, ``memory``, ``losses`` (config);
2. ``fields/`` and ``neural_renderer`` (rendering), ``face/`` (data, geometry, atomic_io);
3. ``models`` (config, fields, neural_renderer, rendering, geometry), ``preprocess/`` (data, face, geometry,
   atomic_io, run_lock), ``estimator/`` (checkpoint, config, data, geometry, loop);
4. ``fitting`` (models and everything below; TODO(lead): becomes the ``fitting/`` package of helper
   "fitpkg"), ``evaluation/`` (fitting, estimator and below; its exact-render measurements are
   ``evaluation/exact_render.py``);
5. ``training`` (imported only by ``train_headnerf.py`` and its tests), ``fitting_outputs``, ``eyewarp/``.

Known upward arrows, each a lazy import with a comment, left for the lead: ``fitting`` -> ``evaluation.readout``
(the fit's ground-truth check) and ``eyewarp`` <-> ``fitting_outputs`` (shared image writers).
The top-level scripts (``train_headnerf.py``, ``Evaluation.py``, ``FittingSingleImage.py``,
``train_gaze_estimator.py``, ``DataProcess/*.py``) parse arguments and call one package function.
"""

__version__ = "0.1.0"
