"""Data on disk: the processed-HDF5 contract and everything that reads or writes it.

Owns: ``layout`` (key names, shapes, dtypes, ``validate_file``, ``read_row`` — the one way to read a
row outside the dataset —, ``Split``/``split.json``), ``dataset`` (``GazeDataset``, lazy h5py rows),
``subject_file`` (writers, resumable ``.partial`` files), ``codes`` (latent-code slices), ``statistics``
(the dataset's camera convention and mean code), ``synthetic/`` (the parametric head, its camera rig,
renderer and dataset writer).

May import: ``geometry``, ``atomic_io`` (and numpy/torch/h5py/pytorch3d). Nothing above it: no
``models``, ``fitting``, ``training``, ``evaluation``, ``face`` or ``preprocess``.
"""
