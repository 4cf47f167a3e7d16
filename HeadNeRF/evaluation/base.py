"""The floor of ``evaluation/``: its error type and the names of what is scored against a target.

Every other module of ``evaluation/`` may import this one; it imports nothing of the package, so
the arrows between ``protocol``, ``report``, ``guards`` and ``controllability`` only go down.
"""

__all__ = ["EvaluationError", "NO_REDIRECTION", "candidates", "no_redirection"]

NO_REDIRECTION = "_no_redirection"  # suffix of a regime's no-redirection row ("codes_no_redirection")


class EvaluationError(ValueError):
    """Bad input for an evaluation (one line; nothing is written)."""


def no_redirection(regime: str) -> str:
    """The record key of a regime's no-redirection baseline."""
    return regime + NO_REDIRECTION


def candidates(regimes) -> list[str]:
    """What is scored against the target, in table order: each regime, its no-redirection row, copy the input."""
    return [c for r in regimes for c in (r, no_redirection(r))] + ["copy_input"]
