"""The neural fields: point encodings and the MLPs that map a sample to density and features.

Owns: ``encoding`` (positional encoding), ``triplane`` (tri-plane features), ``trunk`` (the
code-conditioned trunk), ``gaze`` (the gaze branch and the eye stream).

May import: ``rendering`` (pixel strips for per-pixel conditioning). ``models`` composes the fields;
nothing here imports ``models``, ``data`` or anything above.
"""
