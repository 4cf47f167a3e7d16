"""Per-image metrics of the evaluation: image quality, perceptual, identity, angles.

All image inputs are ``(B, 3, H, W)`` float RGB in [0, 1] unless stated. Every function
returns per-image values so that the protocol can record each pair and aggregate later.

* SSIM, PSNR (whole image), L1: ``torchmetrics.functional``. PSNR of identical images is
  ``inf`` (not clamped). Head-region PSNR: the same formula on the target's head-mask
  pixels only.
* LPIPS: the ``lpips`` package. Its linear heads ship with the package; the backbone's
  ImageNet weights must come from a path (:func:`build_lpips`), never downloaded. Without
  them the metric is skipped with a reason.
* FID: ``torchmetrics``' FrechetInceptionDistance over Inception pool features.
  :class:`FIDFeatures` extracts the features (one image at a time, stored per pair so a
  resumed run gives the same set); :func:`fid_from_features` feeds stored features to
  torchmetrics through a pass-through "feature extractor".
* Identity similarity: dlib's 128-d ResNet face embedding (``face_recognition_models``,
  offline), cosine × 100. Renders are small, so images are upscaled to
  ``identity_size`` first; when the HOG detector finds no face, the whole image is the
  face box (the report says how often).
* Angles: 3-D angular error in degrees between (pitch, yaw) pairs
  (``HeadNeRF.geometry.gaze.angular_error_deg``).
"""

import math
import os
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from ..geometry.gaze import angular_error_deg
from ..metrics import masked_psnr, whiten_background

__all__ = [
    "FIDFeatures",
    "IdentityEmbedder",
    "angle_error_deg",
    "build_fid_features",
    "build_lpips",
    "fid_from_features",
    "identity_similarity",
    "image_metrics",
    "to_uint8",
    "whiten_background",
]


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float [0, 1] -> (H, W, 3) uint8 (round half up, like the dataset's storage)."""
    return (image.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)



def image_metrics(pred: torch.Tensor, target: torch.Tensor, head_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """SSIM, PSNR (whole), PSNR (head region), L1 per image.

    Args:
        pred, target: (B, 3, H, W) in [0, 1]. head_mask: (B, 1, H, W) {0, 1} (the target's).
    Returns:
        {"ssim", "psnr", "psnr_head", "l1"}: (B,) float64 tensors; PSNR is inf for identical
        images, psnr_head (the package's one head PSNR, ``HeadNeRF.metrics.masked_psnr``) NaN for an empty mask.
    """
    from torchmetrics.functional.image import (
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )

    pred, target = pred.double().clamp(0, 1), target.double().clamp(0, 1)
    ssim = structural_similarity_index_measure(pred, target, data_range=1.0, reduction="none")
    mse = (pred - target).square().flatten(1).mean(1)
    psnr = peak_signal_noise_ratio(pred, target, data_range=1.0, reduction="none", dim=(1, 2, 3))
    psnr = torch.where(mse > 0, psnr, torch.full_like(psnr, math.inf))  # torchmetrics divides by zero differently
    psnr_head = masked_psnr(pred, target, head_mask.double())
    l1 = (pred - target).abs().flatten(1).mean(1)
    return {"ssim": ssim.reshape(-1), "psnr": psnr.reshape(-1), "psnr_head": psnr_head, "l1": l1}


def angle_error_deg(a, b) -> float:
    """Angle in degrees between two (pitch, yaw) directions (array-likes of 2), NaN if either is missing."""
    if a is None or b is None:
        return math.nan
    return float(angular_error_deg(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)))


# ---------------------------------------------------------------------------------------- LPIPS

_TV_BACKBONE = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}


def _load_state_dict(path: str) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise TypeError("not a state dict")
    return state


def build_lpips(net: str, weights_path: str, device="cpu"):
    """LPIPS with the backbone's ImageNet weights read from ``weights_path``.

    Returns:
        (callable or None, reason): the callable maps (pred, target) (B, 3, H, W) [0, 1] to (B,)
        LPIPS; None with a one-line reason when the weights are not given or unusable.
    """
    if not weights_path:
        return None, (f"skipped: no backbone weights (metrics.lpips_weights is empty; LPIPS-{net} needs the torchvision "
                      f"{_TV_BACKBONE[net]} ImageNet state dict, which cannot be downloaded here)")
    if not os.path.isfile(weights_path):
        return None, f"skipped: metrics.lpips_weights {weights_path} not found"
    import contextlib
    import io

    import lpips
    import torchvision

    try:
        backbone = getattr(torchvision.models, _TV_BACKBONE[net])(weights=None)
        backbone.load_state_dict(_load_state_dict(weights_path))
    except Exception as exc:  # noqa: BLE001  (any failure: a wrong file for this backbone)
        return None, f"skipped: {weights_path} is not a torchvision {_TV_BACKBONE[net]} state dict ({str(exc).splitlines()[0][:120]})"
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # lpips prints, torchvision warns
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    features = backbone.features
    for sl in model.net.children():  # slice1..N hold features[i] under the name str(i)
        if isinstance(sl, torch.nn.Sequential):
            for name, module in sl.named_children():
                module.load_state_dict(features[int(name)].state_dict())
    model = model.eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)

    def lpips_fn(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = pred.to(device), target.to(device)
        with torch.no_grad():
            size = max(pred.shape[-1], 64)  # the AlexNet trunk needs >= 64 px
            if pred.shape[-1] != size:
                pred = F.interpolate(pred, size=(size, size), mode="bilinear", align_corners=False)
                target = F.interpolate(target, size=(size, size), mode="bilinear", align_corners=False)
            return model(pred.float() * 2 - 1, target.float() * 2 - 1).reshape(-1).double().cpu()

    return lpips_fn, f"LPIPS-{net}, backbone weights {weights_path}"


# ------------------------------------------------------------------------------------------ FID

class FIDFeatures:
    """Inception pool features (2048-d) of single images, from local weights."""

    def __init__(self, model: torch.nn.Module, kind: str, device="cpu"):
        self.model, self.kind, self.device = model.eval().to(device), kind, device

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> np.ndarray:
        """(B, 3, H, W) [0, 1] -> (B, 2048) float64 features."""
        x = image.float().to(self.device)
        if self.kind == "torch_fidelity":  # expects uint8 [0, 255], resizes to 299 itself
            feats = self.model((x.clamp(0, 1) * 255).round().to(torch.uint8))
            feats = feats[0] if isinstance(feats, (tuple, list)) else feats
        else:  # torchvision inception_v3 (fc = identity): ImageNet normalisation at 299 px
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            mean = torch.tensor([0.485, 0.456, 0.406], device=x.device).view(1, 3, 1, 1)
            std = torch.tensor([0.229, 0.224, 0.225], device=x.device).view(1, 3, 1, 1)
            feats = self.model((x - mean) / std)
        return feats.reshape(len(x), -1).double().cpu().numpy()


def build_fid_features(backbone: str, weights_path: str, device="cpu"):
    """(FIDFeatures or None, reason). Never downloads: a missing path or package skips FID."""
    if not weights_path:
        return None, ("skipped: no Inception weights (metrics.fid_weights is empty; they cannot be downloaded here)")
    if not os.path.isfile(weights_path):
        return None, f"skipped: metrics.fid_weights {weights_path} not found"
    try:
        if backbone == "torch_fidelity":
            try:
                from torch_fidelity.feature_extractor_inceptionv3 import (
                    FeatureExtractorInceptionV3,
                )
            except ImportError:
                return None, "skipped: fid_backbone torch_fidelity needs the torch-fidelity package (not installed)"
            model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=weights_path)
            return FIDFeatures(model, backbone, device), f"FID (standard Inception, {weights_path})"
        import torchvision

        model = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
        model.load_state_dict(_load_state_dict(weights_path))
        model.fc = torch.nn.Identity()
        return (FIDFeatures(model, backbone, device),
                f"FID with a torchvision ImageNet Inception-v3 ({weights_path}): not comparable with published FIDs")
    except Exception as exc:  # noqa: BLE001  (any failure means: not usable weights)
        return None, f"skipped: cannot load {weights_path} as {backbone} Inception weights ({str(exc).splitlines()[0][:120]})"


class _PassThrough(torch.nn.Module):
    """A 'feature extractor' for torchmetrics' FID that receives already extracted features."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x):
        return x


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """FID between two feature sets (N, D) with torchmetrics; NaN when either has fewer than 2 rows."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if len(real) < 2 or len(fake) < 2:
        return math.nan
    fid = FrechetInceptionDistance(feature=_PassThrough(real.shape[1]), normalize=True)
    fid.update(torch.as_tensor(real, dtype=torch.float64), real=True)
    fid.update(torch.as_tensor(fake, dtype=torch.float64), real=False)
    return float(fid.compute())


# ------------------------------------------------------------------------------------- identity

class IdentityEmbedder:
    """dlib's 128-d face embedding of an image (upscaled; whole image as box when HOG finds none)."""

    def __init__(self, size: int = 256):
        import dlib

        with warnings.catch_warnings():  # face_recognition_models imports pkg_resources (deprecated)
            warnings.simplefilter("ignore", UserWarning)
            import face_recognition_models as frm

        self.size = size
        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self.encoder = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
        self._dlib = dlib

    def __call__(self, image: torch.Tensor) -> tuple[np.ndarray, bool]:
        """(3, H, W) [0, 1] -> ((128,) float64 embedding, whether HOG found a face)."""
        x = image[None].float().clamp(0, 1)
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False).clamp(0, 1)
        img = np.ascontiguousarray(to_uint8(x[0]))
        dets = self.detector(img, 0)
        found = len(dets) > 0
        if found:
            box = max(dets, key=lambda r: r.width() * r.height())
        else:
            box = self._dlib.rectangle(0, 0, self.size - 1, self.size - 1)
        shape = self.shape(img, box)
        emb = np.asarray(self.encoder.compute_face_descriptor(img, shape), dtype=np.float64)
        return emb, found


def identity_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings × 100."""
    return float(100.0 * np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
