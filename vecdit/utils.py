# Copyright 2026 The vecdit authors. Apache-2.0.
import logging

logger = logging.getLogger("vecdit")
_warned: set[str] = set()


def warn_once(message: str) -> None:
    """A warning logged once per process (fallbacks that must not flood a 50-step run)."""
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)
