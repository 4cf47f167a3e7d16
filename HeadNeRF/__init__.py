"""HeadNeRF_Gaze: a gaze-conditioned head NeRF for 3D-aware gaze redirection.

Data flows one way: HDF5 row (``data``) -> camera + codes + gaze -> rays and samples
(``rendering``) -> fields (``fields``) -> volume rendering -> 2-D neural renderer ->
image -> losses. ``models`` composes the pieces; ``training`` runs the loop.
"""

__version__ = "0.1.0"
