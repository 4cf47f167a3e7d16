"""Loss terms (HeadNeRF/losses.py): the pooled and the per-image masked errors."""

import torch

from HeadNeRF.config import LossConfig
from HeadNeRF.losses import masked_error, masked_error_per_image, total_loss


def _two_images():
    """Image 0: a 16-pixel eye with error 1; image 1: a 1-pixel eye with error 3 (a turned view's small eye)."""
    pred = torch.zeros(2, 3, 8, 8)
    target = torch.zeros(2, 3, 8, 8)
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, :, :4, :4] = 1.0
    target[0, :, :4, :4] = 1.0
    mask[1, :, 5, 5] = 1.0
    target[1, :, 5, 5] = 3.0
    return pred, target, mask


def test_per_image_error_weighs_every_image_the_same():
    pred, target, mask = _two_images()
    per_image = masked_error_per_image(pred, target, mask)
    pooled = masked_error(pred, target, mask)
    torch.testing.assert_close(per_image, torch.tensor((1.0 + 9.0) / 2))  # mean of the two images' MSEs
    torch.testing.assert_close(pooled, torch.tensor((16 * 1.0 + 9.0) / 17))  # the big eye dominates
    assert per_image > 2 * pooled


def test_per_image_error_leaves_out_empty_masks_and_is_zero_without_any():
    pred, target, mask = _two_images()
    mask[1] = 0.0
    torch.testing.assert_close(masked_error_per_image(pred, target, mask), torch.tensor(1.0))
    assert masked_error_per_image(pred, target, torch.zeros_like(mask)).item() == 0.0


def test_total_loss_switches_the_eye_term():
    pred, target, mask = _two_images()
    head = torch.ones_like(mask)
    out = {"image": pred}
    batch = {"image": target, "head_mask": head, "eye_mask": mask}
    _, pooled = total_loss(out, batch, LossConfig(eye_per_image=False))
    _, per_image = total_loss(out, batch, LossConfig(eye_per_image=True))
    torch.testing.assert_close(pooled["eye"], masked_error(pred, target, mask))
    torch.testing.assert_close(per_image["eye"], masked_error_per_image(pred, target, mask))
    torch.testing.assert_close(pooled["head"], per_image["head"])
