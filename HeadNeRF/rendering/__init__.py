"""Rays, samples and volume rendering as pure tensor functions (no network, no activation).

Owns: ``rays`` (rays through pixel centres, bound-sphere chords, pixel strips), ``sampling``
(stratified samples), ``volume`` (density -> weights -> composited features, depth, opacity),
``density_grid`` (the occupancy grid that guides sampling), ``pixels`` (random pixel subsets and
gathering a batch at them). Public entry points check their shapes (``HeadNeRF.shapes``).

May import: ``geometry``, ``shapes``. Nothing above it (``fields``, ``models`` build on it).
"""
