"""Shape checks at public entry points: one clear error naming the expected and the actual shape.

``check_shape("rays_through", "K", K, ("B", 3, 3), dims)`` raises :class:`ShapeError` with
``rays_through: K must be (B, 3, 3), got (2, 3, 4)``. Named dimensions (strings) are bound on
first sight in ``dims`` and must agree afterwards, so ``B`` means the same batch in every argument;
``None`` accepts any size. The checks read only ``tensor.shape`` (no device sync).

Floor module: imports nothing of the package.
"""

__all__ = ["ShapeError", "check_shape"]


class ShapeError(ValueError):
    """A tensor of the wrong shape reached a public entry point. One line: where, what, expected, actual."""


def _spell(expected: tuple, dims: dict) -> str:
    parts = []
    for e in expected:
        if isinstance(e, str) and e in dims:
            parts.append(f"{e}={dims[e]}")
        else:
            parts.append("*" if e is None else str(e))
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def check_shape(where: str, name: str, tensor, expected: tuple, dims: dict | None = None) -> dict:
    """Check ``tensor.shape`` against ``expected`` (ints, dimension names, None); return the bound names.

    Raises:
        ShapeError: ``<where>: <name> must be <expected>, got <actual>``.
    """
    dims = {} if dims is None else dims
    shape = tuple(tensor.shape)
    ok = len(shape) == len(expected)
    bound = dict(dims)
    if ok:
        for size, e in zip(shape, expected):
            if e is None:
                continue
            if isinstance(e, str):
                if bound.setdefault(e, size) != size:
                    ok = False
                    break
            elif size != e:
                ok = False
                break
    if not ok:
        raise ShapeError(f"{where}: {name} must be {_spell(expected, dims)}, got {shape}")
    dims.update(bound)
    return dims
