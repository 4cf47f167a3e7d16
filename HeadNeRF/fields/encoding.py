"""Positional encoding of 3-D points (the seed's layout).

    PE(x) = [x, sin(2^0 x), cos(2^0 x), sin(2^1 x), cos(2^1 x), ..., cos(2^(n-1) x)]

Each entry is a block of ``D`` channels (D = 3 for points); frequencies are powers of two
with **no π factor**, as in the seed, so pretrained seed weights would see the same inputs.
"""

import torch

__all__ = ["positional_encoding", "encoding_dim"]


def encoding_dim(num_freqs: int, in_dim: int = 3) -> int:
    """Channels of ``positional_encoding`` for ``num_freqs`` frequencies of an ``in_dim`` input.

    Example:
        >>> encoding_dim(10)
        63
    """
    return in_dim * (1 + 2 * num_freqs)


def positional_encoding(x: torch.Tensor, num_freqs: int) -> torch.Tensor:
    """(..., D) -> (..., D * (1 + 2 * num_freqs)), channel order as in the module docstring.

    Example:
        >>> positional_encoding(torch.zeros(1, 3), 1)
        tensor([[0., 0., 0., 0., 0., 0., 1., 1., 1.]])
    """
    if num_freqs == 0:
        return x
    freqs = 2.0 ** torch.arange(num_freqs, device=x.device, dtype=x.dtype)  # (F,)
    scaled = x.unsqueeze(-2) * freqs.unsqueeze(-1)  # (..., F, D)
    sin_cos = torch.stack((torch.sin(scaled), torch.cos(scaled)), dim=-2)  # (..., F, 2, D)
    return torch.cat((x, sin_cos.flatten(-3)), dim=-1)
