# Copyright 2026 The vecdit authors. Apache-2.0.
import logging

logger = logging.getLogger("vecdit")
_warned: set[str] = set()


def warn_once(message: str) -> None:
    """A warning logged once per process (fallbacks that must not flood a 50-step run)."""
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


def transformers_of(pipe_or_model) -> list:
    """The denoisers of a pipeline (`transformer`, and Wan2.2's `transformer_2`), or the model itself."""
    if hasattr(pipe_or_model, "attn_processors"):
        return [pipe_or_model]
    found = [getattr(pipe_or_model, n, None) for n in ("transformer", "transformer_2")]
    found = [m for m in found if m is not None]
    if not found:
        raise ValueError(f"{type(pipe_or_model).__name__} has no `transformer`; pass a pipeline or a transformer model")
    return found
