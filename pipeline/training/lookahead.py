"""Lookahead on the weights, as airbench94 schedules it.

Lookahead (Zhang, Lucas, Hinton, Ba 2019, "Lookahead Optimizer: k steps forward, 1 step back") keeps a slow
copy of the weights; every `every` optimizer steps the slow copy moves towards the fast weights and the fast
weights are set to it:

    slow <- decay * slow + (1 - decay) * fast;   fast <- slow

airbench94 (Keller Jordan, 2024) schedules the decay over the run: decay_t = base ** every * (t / T) ** power
with base 0.95, every 5, power 3 (no averaging at the start, 0.77 at the end), applies it to every float
weight including BatchNorm's moving statistics, and ends training on the slow weights.

Resume is exact without extra state: the callback also takes one Lookahead step after each epoch's last
batch, so validation, checkpoints and the weights the resume backup saves are the slow weights (fast == slow), and the step t is the optimizer's own
`iterations` (saved with it). On a resumed run the slow copy starts from those weights: the same state.
"""

from __future__ import annotations

import keras
import numpy as np


def lookahead_decay(step: int, total_steps: int, *, every: int, base: float, power: float) -> float:
    """airbench94's decay at optimizer step `step` of `total_steps`: base**every * (step/total)**power,
    in [0, base**every]. Raises ValueError for total_steps < 1."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1. Received: total_steps={total_steps}")
    fraction = min(max(step / total_steps, 0.0), 1.0)
    return float(base**every * fraction**power)


class Lookahead(keras.callbacks.Callback):
    """Every `every` steps (and after each epoch's last batch) moves the slow weights towards the model's and puts
    them in the model (see the module docstring). Weights: every floating-point variable of the model
    (trainable or not: BatchNorm statistics too); integer state (seed generators) is left alone.

    Args:
        every: optimizer steps between two Lookahead steps (airbench94: 5).
        base, power: the decay schedule, base**every * (t / T)**power (airbench94: 0.95, 3).
        steps_per_epoch: batches per epoch when `fit` does not know them (a dataset of unknown
            cardinality); `fit`'s own count wins when it has one.
    """

    def __init__(self, *, every: int = 5, base: float = 0.95, power: float = 3.0, steps_per_epoch: int | None = None):
        super().__init__()
        self.every, self.base, self.power = int(every), float(base), float(power)
        self.steps_per_epoch = steps_per_epoch
        self._slow: list[np.ndarray] | None = None
        self._variables = []
        self._steps = 1
        self._total = 1
        self._synced_at = -1  # the optimizer step of the last Lookahead step

    def on_train_begin(self, logs=None):
        self._variables = [v for v in self.model.weights if "float" in str(v.dtype)]
        self._slow = [np.array(v.numpy(), copy=True) for v in self._variables]
        self._steps = max(1, int(self.params.get("steps") or self.steps_per_epoch or 1))
        self._total = max(1, int(self.params.get("epochs") or 1) * self._steps)

    def _step(self) -> int:
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def _update(self, step: int) -> None:
        decay = lookahead_decay(step, self._total, every=self.every, base=self.base, power=self.power)
        self._synced_at = step
        for index, variable in enumerate(self._variables):
            slow = self._slow[index]
            slow *= decay
            slow += (1.0 - decay) * variable.numpy()
            variable.assign(slow)

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        # The epoch's last batch steps too: validation, checkpoints and the resume backup see the slow weights.
        if step % self.every == 0 or batch + 1 == self._steps:
            self._update(step)

    def on_epoch_end(self, epoch, logs=None):
        # An epoch shorter than counted (a file that stopped decoding since the scan) missed the last-batch
        # step: take it now, so that at least the backup holds the slow weights.
        step = self._step()
        if step != self._synced_at:
            self._update(step)
