"""Latent-code blocks: a stored code (identity | expression | albedo | illumination, at the offsets
of the file's ``code_slices``) <-> the model's shape code (identity ⊕ expression) and appearance
code (albedo ⊕ illumination). Shared by the dataset, fitting and evaluation, whatever the code
layout (the synthetic 43-d one, NL3DMM's 306-d one, ...).
"""

import torch

__all__ = ["split_code", "join_code"]


def split_code(code: torch.Tensor, code_slices: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., D) latent code -> (shape (..., Ds) = identity ⊕ expression, appearance (..., Da) = albedo ⊕ illumination)."""
    def part(name):
        return code[..., code_slices[name][0]:code_slices[name][1]]

    return (torch.cat((part("identity"), part("expression")), -1),
            torch.cat((part("albedo"), part("illumination")), -1))


def join_code(shape_code: torch.Tensor, appearance_code: torch.Tensor, code_slices: dict) -> torch.Tensor:
    """Inverse of :func:`split_code`: (..., Ds), (..., Da) -> (..., D) in ``code_slices`` order."""
    D = max(b for _, b in code_slices.values())
    out = shape_code.new_zeros(*shape_code.shape[:-1], D)
    offset = {"identity": 0, "expression": None, "albedo": 0, "illumination": None}
    n_id = code_slices["identity"][1] - code_slices["identity"][0]
    n_alb = code_slices["albedo"][1] - code_slices["albedo"][0]
    offset["expression"], offset["illumination"] = n_id, n_alb
    for name, src in (("identity", shape_code), ("expression", shape_code), ("albedo", appearance_code),
                      ("illumination", appearance_code)):
        a, b = code_slices[name]
        out[..., a:b] = src[..., offset[name]:offset[name] + (b - a)]
    return out
