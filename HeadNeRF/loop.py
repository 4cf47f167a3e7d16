"""Scaffolding shared by the package's optimisation loops (NeRF training, estimator training, fitting).

One idea: a step that cannot hurt. ``backward_if_finite`` backpropagates only a finite loss and
reports whether every gradient is finite; ``step_or_skip`` then takes the optimiser step or skips
it with a warning, and raises :class:`TrainingAborted` after ``max_bad_steps`` skips in a row (the
last good checkpoint stays untouched). ``StepBatchSampler`` makes the data order a pure function of
(seed, step), so a resumed loop sees exactly the batches an uninterrupted one would have seen.
:class:`GuardedStep` puts the two together with the running count of skipped steps (and, under DDP,
the ranks' agreement to skip); ``to_device`` moves a collated batch.

Imports only torch and ``HeadNeRF.config``: every loop may stand on it, none stands on another loop.
"""

import signal
import warnings

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from .config import ConfigError

__all__ = ["TrainingAborted", "backward_if_finite", "step_or_skip", "GuardedStep", "StepBatchSampler", "StopOnSignal",
           "to_device"]


class TrainingAborted(RuntimeError):
    """Training stopped on purpose (too many bad steps). One-line message."""


def backward_if_finite(loss: torch.Tensor, params: list) -> torch.Tensor:
    """Backpropagate ``loss`` when it is finite. Returns a () float tensor: 1 when the loss and every
    gradient are finite, else 0 (a tensor, so that DDP ranks can all-reduce it before deciding)."""
    finite = torch.isfinite(loss).float()
    if finite.item():
        loss.backward()
        grads = [torch.isfinite(p.grad).all() for p in params if p.grad is not None]
        finite = torch.stack(grads).all().float() if grads else finite
    return finite


def step_or_skip(finite: bool, loss: torch.Tensor, optimizer, params: list, grad_clip: float, bad_steps: int,
                 max_bad_steps: int, step: int, run_dir: str, lr_key: str) -> int:
    """Take the optimiser step when ``finite``; otherwise skip it with a warning and raise
    TrainingAborted after ``max_bad_steps`` in a row (the last good checkpoint stays untouched).
    Returns the new count of consecutive skipped steps."""
    if finite:
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        return 0
    bad_steps += 1
    warnings.warn(f"step {step}: non-finite loss or gradient ({loss.item()}); step skipped "
                  f"({bad_steps}/{max_bad_steps} in a row)")
    if bad_steps >= max_bad_steps:
        raise TrainingAborted(f"{bad_steps} consecutive non-finite losses at step {step}; aborting. "
                              f"The last good checkpoint in {run_dir}/checkpoints is untouched; "
                              f"lower {lr_key} or check the data")
    return bad_steps


class GuardedStep:
    """The optimiser step of a loop that cannot hurt: zero the gradients, backpropagate a finite loss,
    then step or skip (:func:`step_or_skip`), counting skipped steps in a row in ``bad_steps``.

    ``all_ranks``: under DDP every rank must agree to skip (else they would deadlock or diverge), so the
    finite flag is all-reduced (minimum) before the decision.
    """

    def __init__(self, optimizer, params: list, grad_clip: float, max_bad_steps: int, run_dir: str, lr_key: str,
                 all_ranks: bool = False):
        self.optimizer, self.params, self.grad_clip = optimizer, params, grad_clip
        self.max_bad_steps, self.run_dir, self.lr_key, self.all_ranks = max_bad_steps, run_dir, lr_key, all_ranks
        self.bad_steps = 0

    def __call__(self, loss: torch.Tensor, step: int) -> bool:
        """Step on ``loss`` (a () tensor) at loop step ``step``. Returns whether the step was taken."""
        self.optimizer.zero_grad(set_to_none=True)
        finite = backward_if_finite(loss, self.params)
        if self.all_ranks:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        taken = bool(finite.item())
        self.bad_steps = step_or_skip(taken, loss, self.optimizer, self.params, self.grad_clip, self.bad_steps,
                                      self.max_bad_steps, step, self.run_dir, self.lr_key)
        return taken


def to_device(batch: dict, device) -> dict:
    """A collated batch of tensors moved to ``device`` (non-blocking)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


class StepBatchSampler(torch.utils.data.Sampler):
    """Yields the index batches of steps ``start_step .. total_steps-1`` (see module docstring)."""

    def __init__(self, dataset, batch_size: int, seed: int, start_step: int, total_steps: int,
                 rank: int = 0, world_size: int = 1):
        self.sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                                          drop_last=True)
        self.batch_size, self.start, self.total = batch_size, start_step, total_steps
        self.per_epoch = len(self.sampler) // batch_size
        if self.per_epoch == 0:
            raise ConfigError(f"batch_size: {batch_size} x {world_size} process(es) is more than the "
                              f"{len(dataset)} training images; lower batch_size")

    def __len__(self) -> int:
        return self.total - self.start

    def __iter__(self):
        epoch, order = None, None
        for step in range(self.start, self.total):
            e, k = divmod(step, self.per_epoch)
            if e != epoch:
                self.sampler.set_epoch(e)
                epoch, order = e, list(self.sampler)
            yield order[k * self.batch_size:(k + 1) * self.batch_size]


class StopOnSignal:
    """SIGINT/SIGTERM end a loop at the next step boundary instead of in the middle of a step.

    ``install()`` replaces the handlers with one that only records the signal; the loop calls
    ``exit_if_requested(checkpoint, message)`` once per step, which writes the checkpoint, prints the
    message (``{signum}`` is filled in; None prints nothing, e.g. on DDP ranks > 0) and exits with
    ``128 + signum``; ``restore()`` (in the loop's ``finally``) puts the old handlers back.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._old: dict = {}

    def _record(self, signum, _frame) -> None:
        self.signum = signum

    def install(self) -> "StopOnSignal":
        self._old = {s: signal.signal(s, self._record) for s in self.SIGNALS}
        return self

    def restore(self) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)
        self._old = {}

    def exit_if_requested(self, checkpoint, message: str | None) -> None:
        if self.signum is None:
            return
        checkpoint()
        if message:
            print(message.format(signum=self.signum))
        raise SystemExit(128 + self.signum)
