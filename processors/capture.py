# Copyright 2026 The vecdit authors. Apache-2.0.
"""`CalibrationProcessor`: dense attention that hands each sparse-capable layer's q, k, v to a sink.

It stands in for `VecAttnProcessor` for one generation (`tiny_quality --attention-error`): the video
is the dense one, and at the chosen steps every sparse call's post-RoPE q, k, v go to `sink` with the
layer index and the query tiles of the forward's grid.
"""
from __future__ import annotations

from vecdit.config import VecAttnConfig

from ._sparse import SparseCall
from .vec_attn import VecAttnProcessor


class CalibrationProcessor(VecAttnProcessor):
    """Dense attention, plus capture of q, k, v at `steps` (every branch).

    Args:
        sink (`(layer, q, k, v, first_head, query_tiles) -> None`): receives each capture.
        steps (iterable of `int`): the denoising steps captured.
    """

    def __init__(self, sink, steps):
        super().__init__(VecAttnConfig(dense_steps=0))
        self.sink, self.steps = sink, set(steps)

    def _sparse(self, q, k, v, call: SparseCall):
        # eager only (calibration is not compiled): the layer index is read here
        layer = call.state.layer if call.state is not None else None
        if layer is not None and call.hook.t.step in self.steps:
            n = call.n_select
            self.sink(layer, q, k[:, :n], v[:, :n], call.heads[0] if call.heads else 0,
                      self._query_tiles(call.hook, q.shape[1]))
        return self._dense(q, k, v)
