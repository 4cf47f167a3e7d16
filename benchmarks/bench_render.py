"""Render / train-step timings of HeadNeRF_Gaze, the MLP's achieved GFLOP/s against a plain
fp32 GEMM, and the speed-up over a "seed-layout" re-implementation of the same field.

Prints numbers only (no asserts). CPU, ``torch.set_num_threads(2)`` unless ``--threads``. Usage:

    python benchmarks/bench_render.py [--only seed|quick] [--repeats N] [--threads T] [--clock wall|cpu]
                                      [--malloc keep|default] [--profile ROWS]

On a machine shared with other jobs, ``--threads 1 --clock cpu`` gives stable numbers (CPU
time, not time spent waiting for a core). ``--malloc`` chooses the allocator setting of the
whole process (HeadNeRF/memory.py; opt-in: ``keep`` held 14.5 GB and was OOM-killed at seed size B=2 on this 23 GB VM), so ours and the seed layout always
run under the same one; compare two runs to see what it buys. The opt-in
``mlp_precision: bf16`` model (same weights) is timed beside the fp32 one and printed apart:
it is not bit-identical, and the seed layout stays fp32.

Seed layout (defined here only, as the baseline): 1×1 ``Conv2d`` on ``(B, C, rays, samples)``,
all ``num_samples`` samples on every ray (no bound-sphere skipping), the shape code / the
per-ray gaze inputs concatenated to every sample, the separate ``RGB_layer_0``, and the gaze
MLP run for both the gaze and the template input (the seed always computes both to blend
them). Its FLOPs per sample are what the seed executes (the dead ``Gaze_RGB_layer_0`` excluded).
"""

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from HeadNeRF.config import ModelConfig, load_yaml  # noqa: E402
from HeadNeRF.fields.encoding import encoding_dim, positional_encoding  # noqa: E402
from HeadNeRF.fields.gaze import gaze_input_dim, per_ray_gaze_inputs, pool_eye_mask  # noqa: E402
from HeadNeRF.geometry.cameras import intrinsics_matrix, scale_intrinsics  # noqa: E402
from HeadNeRF.memory import keep_freed_memory  # noqa: E402
from HeadNeRF.models import build_model, mlp_autocast  # noqa: E402
from HeadNeRF.rendering.rays import generate_rays  # noqa: E402

SHAPE_DIM, APPEARANCE_DIM = 179, 127  # the seed's codes

CONFIGS = {
    "seed": ModelConfig(),  # 32² rays × 64 samples, 8×384 MLPs, 256 ch, 512² output
    "quick": load_yaml(str(Path(__file__).resolve().parents[1] / "config" / "quickstart.yml")).model,
}


def timeit(fn, repeats: int, warmup: int = 2) -> float:
    """Fastest wall time of ``fn()`` over ``repeats`` runs, in ms.

    The minimum, not the median: this 2-core VM shows large run-to-run noise from outside the
    process, and the minimum is the least disturbed estimate of the code's own cost.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return min(times)


def inputs(cfg: ModelConfig, B: int, seed: int = 0) -> dict:
    """The seed's 3DMM camera: frontal, distance 6.21, focal 812·S/400 px; eye band mask."""
    g = torch.Generator().manual_seed(seed)
    S = cfg.image_size
    eye_mask = torch.zeros(B, 1, S, S)
    eye_mask[:, :, int(0.38 * S):int(0.48 * S), int(0.25 * S):int(0.75 * S)] = 1.0
    return dict(shape_code=torch.randn(B, SHAPE_DIM, generator=g), appearance_code=torch.randn(B, APPEARANCE_DIM, generator=g),
                R_w2c=torch.eye(3).expand(B, 3, 3).clone(), t_w2c=torch.tensor([0.0, 0.0, 6.21]).expand(B, 3).clone(),
                K=intrinsics_matrix(812.0 * S / 400.0, S, B), gaze_head=0.3 * torch.randn(B, 2, generator=g),
                eye_mask=eye_mask)


def count_linear_flops(model: nn.Module, fn) -> int:
    """FLOPs (2·in·out per row) of every nn.Linear / 1×1 Conv2d executed during ``fn()``."""
    total = [0]

    def linear_hook(mod, inp, out):
        total[0] += 2 * mod.in_features * mod.out_features * (inp[0].numel() // mod.in_features)

    def conv_hook(mod, inp, out):
        if mod.kernel_size == (1, 1):
            total[0] += 2 * mod.in_channels * mod.out_channels * (inp[0].numel() // mod.in_channels)

    handles = [m.register_forward_hook(linear_hook) for m in model.modules() if isinstance(m, nn.Linear)]
    handles += [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        fn()
    for h in handles:
        h.remove()
    return total[0]


def gemm_gflops(m: int, k: int, n: int, repeats: int = 5) -> float:
    a, b = torch.randn(m, k), torch.randn(k, n)
    ms = timeit(lambda: a @ b, repeats, warmup=2)
    return 2 * m * k * n / ms / 1e6


# ----------------------------------------------------------------------------------------------
# Seed-layout baseline: the same field computed the seed's way (benchmark only)

def conv1x1(cin, cout):
    return nn.Conv2d(cin, cout, 1)


class SeedLayoutField(nn.Module):
    """Trunk + gaze MLP as 1×1 convs on (B, C, rays, samples), codes concatenated per sample."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        pe = encoding_dim(cfg.pe_freqs)
        vp, W, Wg = pe + SHAPE_DIM, cfg.mlp_width, cfg.gaze_mlp_width
        self.trunk = nn.ModuleList([conv1x1(vp, W)] + [conv1x1(W + (vp if i == cfg.skip_layer + 1 else 0), W)
                                                       for i in range(1, cfg.mlp_depth)])
        self.density = conv1x1(W, 1)
        self.rgb0, self.rgb1, self.rgb2 = conv1x1(W, W), conv1x1(W + APPEARANCE_DIM, W // 2), conv1x1(W // 2, cfg.featmap_channels)
        gin = pe + gaze_input_dim(cfg.gaze_tile)
        skip = cfg.gaze_mlp_depth // 2 + 1
        self.gaze = nn.ModuleList([conv1x1(gin, Wg)] + [conv1x1(Wg + (gin if i == skip else 0), Wg)
                                                        for i in range(1, cfg.gaze_mlp_depth)])
        self.gaze_skip = skip
        self.gaze_rgb = conv1x1(Wg, W // 2)
        self.gaze_density = nn.Identity() if Wg == W else conv1x1(Wg, W)  # as GazeMLP.density_out

    def mlp(self, layers, x, skip):
        h = x
        for i, layer in enumerate(layers):
            h = F.relu(layer(torch.cat((x, h), 1) if i == skip else h))
        return h

    def forward(self, points_pe, shape_code, appearance_code, ray_inputs):
        """points_pe (B, P, R, S); codes (B, D); ray_inputs (2, B, F, R) -> features, density (and template)."""
        B, _, R, S = points_pe.shape
        vp = torch.cat((points_pe, shape_code[:, :, None, None].expand(B, -1, R, S)), 1)
        h = self.mlp(self.trunk, vp, self.cfg.skip_layer + 1)
        outs = []
        for g in ray_inputs:  # gaze, then template: the seed computes both
            gin = torch.cat((points_pe, g[..., None].expand(B, -1, R, S)), 1)
            hg = self.mlp(self.gaze, gin, self.gaze_skip)
            outs.append((self.gaze_density(hg), F.relu(self.gaze_rgb(hg))))
        (dg, cg), (dt, ct) = outs
        a = self.cfg.feat_addition_alpha
        d_inj, c_inj = a * dg + (1 - a) * dt, a * cg + (1 - a) * ct
        density = F.relu(self.density(h + d_inj))
        colour = F.relu(self.rgb1(torch.cat((self.rgb0(h), appearance_code[:, :, None, None].expand(B, -1, R, S)), 1)))
        return self.rgb2(colour + c_inj), density


def seed_layout_inputs(cfg: ModelConfig, x: dict):
    """All rays × all samples between the seed's world-z planes; per-ray inputs for gaze and template."""
    B, h = x["shape_code"].shape[0], cfg.featmap_size
    o, d = generate_rays(x["R_w2c"], x["t_w2c"], scale_intrinsics(x["K"], h / cfg.image_size), h, h)
    depths = torch.linspace(3.7, 9.7, cfg.num_samples)  # world z from +2.5 to -3.5 for this camera
    pts = o.unsqueeze(2) + d.unsqueeze(2) * depths[:, None]  # (B, R, S, 3)
    pe = positional_encoding(pts, cfg.pe_freqs).permute(0, 3, 1, 2).contiguous()  # (B, P, R, S)
    pooled = pool_eye_mask(x["eye_mask"], B, h, x["shape_code"])
    ray_inputs = torch.stack([per_ray_gaze_inputs(pooled, g, cfg.gaze_tile).transpose(1, 2)
                              for g in (x["gaze_head"], torch.zeros_like(x["gaze_head"]))])  # (2, B, F, R)
    return pe, ray_inputs


# ----------------------------------------------------------------------------------------------

CLOCK = {"fn": time.perf_counter}  # --clock cpu: time.process_time


def interleaved_min(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """{name: fastest ms} with the functions run round-robin, so that slow phases of this noisy
    VM hit all of them alike (ratios are taken between numbers from the same rounds).

    With ``--clock cpu`` the time is the process's CPU time (user + system, page faults
    included): on a VM shared with other jobs, wall time also counts the time this process
    waited for a core, which CPU time does not. Use it with ``--threads 1``: with several
    threads it adds up their spin-waits too."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = {k: math.inf for k in fns}
    clock = CLOCK["fn"]
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = clock()
            fn()
            best[k] = min(best[k], (clock() - t0) * 1e3)
    return best


def print_profile(label: str, fn, rows: int) -> None:
    """One run of ``fn`` under ``torch.profiler`` (CPU): the ``rows`` ops with the most self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    fn()  # warm-up outside the profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    print(f"--- profile: {label} (one step; self CPU time) ---")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def bench_config(name: str, cfg: ModelConfig, repeats: int, train_repeats: int, profile_rows: int = 0) -> None:
    print(f"\n=== {name}: {cfg.featmap_size}² rays × {cfg.num_samples} samples, trunk {cfg.mlp_depth}×{cfg.mlp_width}, "
          f"gaze {cfg.gaze_mlp_depth}×{cfg.gaze_mlp_width}, {cfg.featmap_channels} ch, {cfg.image_size}² output ===")
    torch.manual_seed(0)
    model = build_model(cfg, SHAPE_DIM, APPEARANCE_DIM).eval()
    seed = SeedLayoutField(cfg).eval()
    # the same weights with the opt-in ModelConfig.mlp_precision = "bf16" (not bit-identical; reported apart)
    model_bf16 = build_model(dataclasses.replace(cfg, mlp_precision="bf16"), SHAPE_DIM, APPEARANCE_DIM).eval()
    model_bf16.load_state_dict(model.state_dict())
    x1 = inputs(cfg, 1)
    rays = model.make_rays(x1["R_w2c"], x1["t_w2c"], x1["K"], training=False)
    n_hit = rays.ray_index.numel()
    samples = n_hit * cfg.num_samples
    print(f"rays hitting the bound sphere: {n_hit}/{cfg.featmap_size ** 2} ({100 * n_hit / cfg.featmap_size ** 2:.0f}%), "
          f"{samples} samples; timings are the fastest of {repeats} interleaved runs")
    pooled = pool_eye_mask(x1["eye_mask"], 1, cfg.featmap_size, x1["shape_code"])
    pe, ray_inputs = seed_layout_inputs(cfg, x1)
    featmap = torch.zeros(1, cfg.featmap_channels, cfg.featmap_size, cfg.featmap_size)

    def field():  # the MLPs + volume compositing of the main image (eval: alpha = 1, no template)
        return model.render_fields(rays, x1["shape_code"], x1["appearance_code"], x1["gaze_head"], pooled, False, False, None)

    def seed_field():
        return seed(pe, x1["shape_code"], x1["appearance_code"], ray_inputs)

    def field_bf16():
        with mlp_autocast("bf16", "cpu"):
            return field()

    W = cfg.mlp_width
    a_sq, b_sq = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a_sh, b_sh = torch.randn(samples, W), torch.randn(W, W)
    flops = count_linear_flops(model, field)
    seed_flops = count_linear_flops(seed, seed_field)
    with torch.no_grad():
        t = interleaved_min({
            "frame": lambda: model(**x1), "field": field, "decode": lambda: model.renderer.decode(featmap),
            "seed_field": seed_field, "gemm_square": lambda: a_sq @ b_sq, "gemm_shape": lambda: a_sh @ b_sh,
            "frame_bf16": lambda: model_bf16(**x1), "field_bf16": field_bf16,
        }, repeats)
    g_field, g_seed = flops / t["field"] / 1e6, seed_flops / t["seed_field"] / 1e6
    g_square, g_shape = 2 * 2048**3 / t["gemm_square"] / 1e6, 2 * samples * W * W / t["gemm_shape"] / 1e6
    seed_frame = t["seed_field"] + 2 * t["decode"]  # the seed decodes the image and the background every forward
    print(f"render, eval, B=1 (ours):             {t['frame']:9.1f} ms/frame  (2-D renderer decode alone: {t['decode']:.1f} ms)")
    print(f"render, eval, B=1 (seed layout):      {seed_frame:9.1f} ms/frame  = seed-layout field + 2 decodes "
          f"-> speed-up {seed_frame / t['frame']:.2f}×")
    print(f"MLP field (ours):                     {t['field']:9.1f} ms  {flops / 1e9:7.2f} GFLOP -> {g_field:6.1f} GFLOP/s")
    print(f"MLP field (seed layout, 1×1 conv):    {t['seed_field']:9.1f} ms  {seed_flops / 1e9:7.2f} GFLOP -> {g_seed:6.1f} GFLOP/s"
          f"  -> speed-up of ours {t['seed_field'] / t['field']:.2f}×")
    print(f"opt-in mlp_precision bf16 (ours):     {t['frame_bf16']:9.1f} ms/frame -> speed-up {seed_frame / t['frame_bf16']:.2f}×;"
          f"  MLP field {t['field_bf16']:.1f} ms -> {t['seed_field'] / t['field_bf16']:.2f}× the fp32 seed layout")
    print(f"fp32 GEMM 2048×2048 @ 2048×2048:      {g_square:6.1f} GFLOP/s   ours/GEMM = {g_field / g_square:.2f}  "
          f"seed/GEMM = {g_seed / g_square:.2f}")
    print(f"fp32 GEMM ({samples}×{W}) @ ({W}×{W}): {g_shape:6.1f} GFLOP/s   ours/GEMM = {g_field / g_shape:.2f}  "
          f"seed/GEMM = {g_seed / g_shape:.2f}")

    # Training steps: jitter, template and background on, as training.py asks for them.
    model.train()
    seed.train()
    model_bf16.train()
    for B in (1, 2):
        xb = inputs(cfg, B)
        gen = torch.Generator().manual_seed(0)
        pe_b, ri_b = seed_layout_inputs(cfg, xb)
        pooled_b = pool_eye_mask(xb["eye_mask"], B, cfg.featmap_size, xb["shape_code"])

        def step():
            out = model(**xb, training=True, render_template=True, render_background=True, generator=gen)
            (out["image"].mean() + out["template_image"].mean() + out["background_image"].mean()).backward()

        def field_step():
            r = model.make_rays(xb["R_w2c"], xb["t_w2c"], xb["K"], training=True, generator=gen)
            main, tmpl = model.render_fields(r, xb["shape_code"], xb["appearance_code"], xb["gaze_head"], pooled_b,
                                             True, True, gen)
            (main["features"].mean() + tmpl["features"].mean()).backward()

        def field_step_bf16():
            r = model_bf16.make_rays(xb["R_w2c"], xb["t_w2c"], xb["K"], training=True, generator=gen)
            with mlp_autocast("bf16", "cpu"):
                main, tmpl = model_bf16.render_fields(r, xb["shape_code"], xb["appearance_code"], xb["gaze_head"],
                                                      pooled_b, True, True, gen)
            (main["features"].mean() + tmpl["features"].mean()).backward()

        def seed_field_step():
            f, d = seed(pe_b, xb["shape_code"], xb["appearance_code"], ri_b)
            (f.mean() + d.mean()).backward()

        t = interleaved_min({"step": step, "field": field_step, "seed_field": seed_field_step,
                             "field_bf16": field_step_bf16}, train_repeats)
        print(f"train step B={B} (fwd+bwd, template + background): {t['step']:9.1f} ms;  MLP field fwd+bwd: ours "
              f"{t['field']:.1f} ms vs seed layout {t['seed_field']:.1f} ms -> {t['seed_field'] / t['field']:.2f}×;  "
              f"opt-in bf16 {t['field_bf16']:.1f} ms -> {t['seed_field'] / t['field_bf16']:.2f}×")
        if profile_rows and B == 1:
            print_profile(f"{name} MLP field fwd+bwd, B=1, fp32", field_step, profile_rows)
            print_profile(f"{name} MLP field fwd+bwd, B=1, opt-in bf16", field_step_bf16, profile_rows)
    model.zero_grad(set_to_none=True)
    model_bf16.zero_grad(set_to_none=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=list(CONFIGS), default=None)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds (inference)")
    parser.add_argument("--train-repeats", type=int, default=2, help="interleaved timing rounds (train steps)")
    parser.add_argument("--malloc", choices=("keep", "default"), default="default",
                        help="keep: glibc keeps freed memory (HeadNeRF/memory.py); default: glibc's own settings. Process-wide: ours and the seed layout always run under the same one")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", type=int, default=0, metavar="ROWS",
                        help="also profile one B=1 field train step (fp32 and bf16) and print its ROWS top ops")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: process CPU time (for a shared, overloaded machine; use with --threads 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        CLOCK["fn"] = time.process_time
    kept = args.malloc == "keep" and keep_freed_memory()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU fp32, {args.clock} clock, "
          f"allocator: {'freed memory kept' if kept else 'glibc default'}")
    for name, cfg in CONFIGS.items():
        if args.only in (None, name):
            bench_config(name, cfg, args.repeats, args.train_repeats, args.profile)


if __name__ == "__main__":
    main()
