"""Loss terms. Each is a function of tensors; ``total_loss`` weights them with ``LossConfig``.

Masks are float {0,1} tensors (B,1,H,W). Every masked mean divides by the mask area
clamped to >= 1, so an empty mask gives 0, never NaN (the seed's ``mse_loss`` over an
empty selection produced NaN and trained on it).
"""

import os

import torch
import torch.nn.functional as F

from .config import ConfigError, LossConfig
from .metrics import whiten_background

__all__ = ["masked_error", "masked_error_per_image", "total_loss", "VGGPerceptual"]


def _pixel_error(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-element squared ("mse") or absolute ("l1") error, shaped like ``pred``."""
    return (pred - target).square() if kind == "mse" else (pred - target).abs()


def masked_error(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Mean photometric error over the pixels where ``mask`` is 1.

    Args:
        pred, target: (B, C, H, W).
        mask: (B, 1, H, W) in [0, 1].
        kind: "mse" or "l1".
    Returns:
        scalar; 0 when the mask is empty.
    """
    err = _pixel_error(pred, target, kind)
    denom = (mask.sum() * pred.shape[1]).clamp_min(1.0)
    return (err * mask).sum() / denom


def masked_error_per_image(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Mean over the images of each image's mean error where ``mask`` is 1 (images with an empty mask left out).

    Unlike ``masked_error``, which pools the pixels of the whole batch, every image weighs the same however many
    masked pixels it has: a turned view's eyes (a few pixels) count as much as a frontal view's.

    Args:
        pred, target: (B, C, H, W).
        mask: (B, 1, H, W) in [0, 1].
    Returns:
        scalar; 0 when every mask is empty.
    """
    err = _pixel_error(pred, target, kind)
    area = mask.sum(dim=(1, 2, 3))  # (B,)
    per_image = (err * mask).sum(dim=(1, 2, 3)) / (area * pred.shape[1]).clamp_min(1e-6)
    has = (area > 0.5).to(per_image.dtype)
    return (per_image * has).sum() / has.sum().clamp_min(1.0)


class VGGPerceptual(torch.nn.Module):
    """Sum of L1 distances between VGG16 relu1_2/2_2/3_3/4_3 features (inputs RGB in [0, 1]).

    ImageNet weights cannot be downloaded offline, so the weights come from a file:
    a torchvision ``vgg16`` state dict (``features.*`` keys are used).
    """

    def __init__(self, weights_path: str):
        super().__init__()
        if not os.path.isfile(weights_path):
            raise ConfigError(f"loss_config.vgg_weights_path: {weights_path!r} not found; give a torchvision vgg16 "
                              "state dict, or set loss_config.vgg: 0")
        import torchvision

        vgg = torchvision.models.vgg16()
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        try:
            vgg.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise ConfigError(f"loss_config.vgg_weights_path: {weights_path} is not a vgg16 state dict "
                              f"({str(exc).splitlines()[0]})") from None
        feats = vgg.features.eval()
        self.blocks = torch.nn.ModuleList([feats[:4], feats[4:9], feats[9:16], feats[16:23]])
        for p in self.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, y = (pred - self.mean) / self.std, (target - self.mean) / self.std
        loss = pred.new_zeros(())
        for block in self.blocks:
            x, y = block(x), block(y)
            loss = loss + F.l1_loss(x, y)
        return loss


def total_loss(out: dict, batch: dict, cfg: LossConfig, vgg: VGGPerceptual | None = None,
               latent_offsets: torch.Tensor | None = None, camera_offsets: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, dict]:
    """Weighted sum of the loss terms; returns (total, {term: detached value}).

    ``out`` is a model output dict ("image", optional "template_image", "background_image");
    ``batch`` a dataset batch ("image", "head_mask", "eye_mask", optional "template_image").
    The target image is whitened outside the head mask (the background is white).
    """
    pred, head, eye = out["image"], batch["head_mask"], batch["eye_mask"]
    gt = whiten_background(batch["image"], head)
    white = torch.ones_like(pred)
    terms = {
        "head": masked_error(pred, gt, head, cfg.photometric),
        "nonhead": masked_error(pred, white, 1.0 - head, "mse"),
        "eye": (masked_error_per_image if cfg.eye_per_image else masked_error)(pred, gt, eye, cfg.photometric),
    }
    if cfg.background > 0 and "background_image" in out:
        terms["background"] = (out["background_image"] - 1.0).square().mean()
    if "template_image" in out:
        non_eye = head * (1.0 - eye)
        if cfg.template > 0:
            terms["template"] = masked_error(out["template_image"], gt, non_eye, cfg.photometric)
        if cfg.template_eye > 0 and "template_image" in batch:
            terms["template_eye"] = masked_error(out["template_image"], batch["template_image"], eye, cfg.photometric)
    if cfg.vgg > 0:
        if vgg is None:
            raise ConfigError("loss_config.vgg > 0 but no VGG network was built (vgg_weights_path missing)")
        terms["vgg"] = vgg(pred, gt)
    if latent_offsets is not None and cfg.latent_reg > 0:
        terms["latent_reg"] = latent_offsets.square().mean()
    if camera_offsets is not None and cfg.camera_reg > 0:
        terms["camera_reg"] = camera_offsets.square().mean()
    weights = {"head": cfg.head, "nonhead": cfg.nonhead, "eye": cfg.eye, "background": cfg.background,
               "template": cfg.template, "template_eye": cfg.template_eye, "vgg": cfg.vgg,
               "latent_reg": cfg.latent_reg, "camera_reg": cfg.camera_reg}
    total = sum(weights[k] * v for k, v in terms.items())
    return total, {k: v.detach() for k, v in terms.items()}
