"""The conditional NeRF MLP of HeadNeRF: (point, shape code, appearance code) -> (feature, density).

Architecture (seed §3.4), on flattened channels-last samples ``(N, S, C)`` (N rays, S samples):

    h_0 = ReLU(W_0 [PE(x), shape])                          layer 0
    h_i = ReLU(W_i h_{i-1})                                 layers 1..depth-1
    h_{k+1} = ReLU(W_{k+1} [PE(x), shape, h_k])            skip after ``skip_layer`` = k
    density = softplus(w_sigma · h + b + density_offset)     (offset: w_sigma · gaze injection)
    colour  = ReLU(W_c h + W_a appearance + b_c) + colour_injection      (width // 2)
    feature = W_f colour + b_f                                           (featmap_channels)

Speed decisions:

* ``nn.Linear`` on channels-last ``(N, S, C)`` tensors (one GEMM per layer), not 1×1 convs.
* The codes are constant over an image, so every layer that reads a code is split into a
  per-sample part (``W_point PE(x)`` [+ ``W_hidden h``]) and a per-image part
  (``W_code code``) computed once per image and broadcast over the samples of each ray,
  instead of concatenating the code to every sample (the seed's 179 + 127 extra input
  channels per sample at layer 0, the skip layer and the colour layer).
* The seed's colour head applies ``RGB_layer_0`` (width→width, **no activation**) and then
  ``RGB_layer_1`` to ``[RGB_layer_0 h, appearance]``: the product of two linear maps. We keep
  the single map ``W_c`` (same function class; width² fewer FLOPs per sample; seed weights
  would load as ``W_c = W_1[:, :width] @ W_0``).
* Injections enter linearly before the density head and after the colour ReLU, so a second
  set of injections (the template pass of HeadNeRF_Gaze) reuses ``hidden`` and the
  colour state of ``heads`` and only re-runs the feature head and the softplus. The density injection, being
  linear, arrives already projected by the density head: one scalar per sample.
* ``heads`` computes the colour layer and the density head's logit as one product (the head's
  row appended to the colour layer's weight): a width -> 1 product alone is three slow GEMMs
  per step (forward, both backward), and the logit is shared by the main and template passes.
  The heads' forward + backward on a quickstart step's 24 k samples: 27.5 -> 16.4 ms (median
  of 8, bf16, 2026-12-03).

Density activation: **softplus**, not the seed's ReLU. Training starts from scratch here (no
licence-restricted HeadNeRF weights), and a ReLU head passes no gradient where its
pre-activation is negative, so regions that start empty can never become opaque; softplus
keeps a gradient everywhere and is still >= 0.
"""

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ConditionalTrunk", "per_ray_code_term", "add_relu", "ray_chunks"]

# Samples per chunk when the MLPs run without autograd (rendering, evaluation): a chunk's
# (rows, width) activations then stay in cache between layers, so the ReLUs and adds between
# the GEMMs stop streaming through main memory. Seed-size field on 2 cores: 0.73 -> 0.89 of
# a 2048² GEMM's throughput with 2048-4096 rows per chunk (benchmarks/bench_render.py).
EVAL_CHUNK_SAMPLES = 4096


def ray_chunks(num_rays: int, samples_per_ray: int) -> list[slice]:
    """Slices over the ray axis: one slice under autograd (training needs every activation
    anyway), else chunks of about ``EVAL_CHUNK_SAMPLES`` samples."""
    if torch.is_grad_enabled():
        return [slice(0, num_rays)]
    step = max(1, EVAL_CHUNK_SAMPLES // max(samples_per_ray, 1))
    return [slice(a, min(a + step, num_rays)) for a in range(0, num_rays, step)]


def add_relu(x: torch.Tensor, *terms: torch.Tensor) -> torch.Tensor:
    """``relu(x + sum(terms))`` for a Linear output ``x`` (terms broadcast to ``x``).

    Under autograd nothing is done in place on ``x``: for (N, S, ·) inputs a Linear output is a
    view of the 2-D GEMM result, and an in-place op on a view becomes a CopySlices node that
    copies the whole gradient (measured: 10-20% of a quickstart train step). Only the fresh
    result of an out-of-place add is modified in place. Without autograd (rendering,
    evaluation) everything is in place, saving one (N, S, W) allocation per op.
    """
    if torch.is_grad_enabled():
        for term in terms:
            x = x + term
        return F.relu_(x) if terms else F.relu(x)
    for term in terms:
        x += term
    return F.relu_(x)


def per_ray_code_term(code_term: torch.Tensor, ray_image: torch.Tensor) -> torch.Tensor:
    """(B, W) per-image term, (N,) image index of each ray -> (N, 1, W), broadcastable over samples."""
    return code_term.index_select(0, ray_image).unsqueeze(1)


class ConditionalTrunk(nn.Module):
    """HeadNeRF's conditional field. See the module docstring for the layer formulas.

    Args:
        point_dim: channels of the encoded point, ``encoding_dim(pe_freqs)``.
        shape_code_dim, appearance_code_dim: per-image code sizes.
        width, depth, skip_layer: ``ModelConfig.mlp_width / mlp_depth / skip_layer``.
        feature_channels: ``ModelConfig.featmap_channels``.
    """

    def __init__(self, point_dim: int, shape_code_dim: int, appearance_code_dim: int, width: int, depth: int,
                 skip_layer: int, feature_channels: int):
        super().__init__()
        self.width, self.depth = width, depth
        self.colour_width = max(width // 2, 1)
        # The skip re-injects the inputs into layer skip_layer + 1 (none if that is past the end).
        self.skip_into = skip_layer + 1 if skip_layer + 1 < depth else None
        self.layers = nn.ModuleList(
            [nn.Linear(point_dim, width)] + [nn.Linear(width, width) for _ in range(depth - 1)]
        )
        self.shape_in = nn.Linear(shape_code_dim, width, bias=False)  # per-image part of layer 0
        if self.skip_into is not None:
            self.skip_point = nn.Linear(point_dim, width, bias=False)
            self.skip_shape = nn.Linear(shape_code_dim, width, bias=False)
        self.density_head = nn.Linear(width, 1)
        self.colour_layer = nn.Linear(width, self.colour_width)
        self.appearance_in = nn.Linear(appearance_code_dim, self.colour_width, bias=False)
        self.feature_head = nn.Linear(self.colour_width, feature_channels)
        for layer in list(self.layers[1:]) + [self.density_head, self.colour_layer]:
            nn.init.xavier_uniform_(layer.weight)  # the seed's init on the hidden layers and heads
        nn.init.zeros_(self.density_head.bias)

    def hidden(self, points_pe: torch.Tensor, shape_code: torch.Tensor, ray_image: torch.Tensor) -> torch.Tensor:
        """Trunk hidden state before the heads.

        Args:
            points_pe: (N, S, P) encoded sample points.
            shape_code: (B, Ds).
            ray_image: (N,) long, the image each ray belongs to.
        Returns:
            h: (N, S, W).
        """
        shape_term = per_ray_code_term(self.shape_in(shape_code), ray_image)  # (N, 1, W)
        skip_term = None
        if self.skip_into is not None:
            skip_term = per_ray_code_term(self.skip_shape(shape_code), ray_image)
        chunks = ray_chunks(points_pe.shape[0], points_pe.shape[1])
        if len(chunks) <= 1:  # one pass (also no rays at all: no chunk)
            return self._hidden(points_pe, shape_term, skip_term)
        out = None
        for c in chunks:
            h = self._hidden(points_pe[c], shape_term[c], None if skip_term is None else skip_term[c])
            if out is None:  # the chunks' own dtype (bf16 under mlp_precision bf16): no fp32 round trip
                out = h.new_empty(points_pe.shape[:2] + (self.width,))
            out[c] = h
        return out

    def _hidden(self, points_pe, shape_term, skip_term):
        h = add_relu(self.layers[0](points_pe), shape_term)
        for i in range(1, self.depth):
            if i == self.skip_into:
                # [h, PE, shape] @ W == W_h h + W_p PE + W_s shape (split, no concat per sample)
                h = add_relu(self.layers[i](h), self.skip_point(points_pe), skip_term)
            else:
                h = add_relu(self.layers[i](h))
        return h

    def heads(self, h: torch.Tensor, appearance_code: torch.Tensor, ray_image: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, S, W) hidden -> (colour hidden state (N, S, W//2), after its ReLU; density logit (N, S)), one product.

        The density head's row is appended to the colour layer's weight: alone, a W -> 1 product runs at ~5 GFLOP/s
        in its forward and both backward products (three ~2 ms GEMMs per quickstart step, measured 2026-12-03), and
        the logit is computed once for every set of injections (``density_from_logit``: main and template pass).
        """
        weight = torch.cat((self.colour_layer.weight, self.density_head.weight))
        bias = torch.cat((self.colour_layer.bias, self.density_head.bias))
        colour, logit = F.linear(h, weight, bias).split([self.colour_width, 1], dim=-1)
        colour = add_relu(colour, per_ray_code_term(self.appearance_in(appearance_code), ray_image))
        return colour, logit.squeeze(-1)

    @staticmethod
    def density_from_logit(logit: torch.Tensor, density_offset: torch.Tensor | None = None) -> torch.Tensor:
        """(N, S) density logit (``heads``) [+ (N, S) pre-activation offset] -> (N, S) density >= 0.

        An additive injection ``inj`` into the hidden state enters the density only through
        ``w · (h + inj) + b = (w · h + b) + w · inj``, so callers pass the scalar offset
        ``w · inj`` (``GazeMLP.density_offset``) instead of an (N, S, W) tensor.
        """
        return F.softplus(logit if density_offset is None else logit + density_offset)

    def features(self, colour_hidden: torch.Tensor, colour_injection: torch.Tensor | None = None) -> torch.Tensor:
        """(N, S, W//2) colour hidden [+ injection] -> (N, S, featmap_channels) features."""
        if colour_injection is not None:
            colour_hidden = colour_hidden + colour_injection
        return self.feature_head(colour_hidden)

    def forward(self, points_pe, shape_code, appearance_code, ray_image, density_offset=None,
                colour_injection=None) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass: returns features (N, S, C) and density (N, S)."""
        colour, logit = self.heads(self.hidden(points_pe, shape_code, ray_image), appearance_code, ray_image)
        return self.features(colour, colour_injection), self.density_from_logit(logit, density_offset)
