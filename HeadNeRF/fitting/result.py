"""The outcome of a fit: :class:`FitResult`, the fitted subject (codes, camera, gaze, network) and how it went."""

import dataclasses

import torch

__all__ = ["FitResult"]


@dataclasses.dataclass
class FitResult:
    """The fitted subject (batch of 1) and how the fit went.

    ``losses``: {stage: [loss per step]}; ``seconds``: {stage: s}; ``psnr_head``: dB of the final
    full-image render on the head mask (vs the target whitened outside it); ``model``: the
    fine-tuned copy, or the original model when ``finetune_steps == 0``.
    """

    shape_code: torch.Tensor
    appearance_code: torch.Tensor
    R_w2c: torch.Tensor
    t_w2c: torch.Tensor
    K: torch.Tensor
    gaze: torch.Tensor
    losses: dict
    psnr_head: float
    seconds: dict
    model: torch.nn.Module
    eye_mask: torch.Tensor
    camera_offset: torch.Tensor  # (6,) the refinement (axis-angle, translation)
    steps_run: dict = dataclasses.field(default_factory=dict)
    head_pose: torch.Tensor | None = None  # (2,) ETH-XGaze head (pitch, yaw) of the fitted camera
    render: torch.Tensor | None = None  # (1,3,S,S) the final render of the target view
    eye_centers: torch.Tensor | None = None  # (1,2,3) fixed eyeball centres (FitConfig.eye_centers "start"), else None

    @property
    def camera(self) -> dict:
        return {"R_w2c": self.R_w2c, "t_w2c": self.t_w2c, "K": self.K}

    @property
    def codes(self) -> dict:
        return {"shape_code": self.shape_code, "appearance_code": self.appearance_code}
