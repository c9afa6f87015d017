"""Minibatch SGD: torch.optim.SGD's documented update, as a pure step and a training loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from service.engine.passes import backward, forward, gradient, loss_value, reduction_scale
from service.engine.plan import Plan
from service.engine.samples import Batch

Array = np.ndarray


@dataclass(frozen=True)
class SgdOptions:
    learning_rate: float
    epochs: int = 1
    batch_size: int | None = None
    shuffle: bool = False
    seed: int | None = None
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    reduction: str = "mean"


def sgd_step(theta: Array, grad: Array, buf: Array | None, opt: SgdOptions) -> tuple[Array, Array | None]:
    """One step of torch.optim.SGD's documented update; returns new (theta, momentum buffer)
    and changes nothing it was given."""
    g = grad + opt.weight_decay * theta if opt.weight_decay else grad
    if opt.momentum:
        buf = g.copy() if buf is None else opt.momentum * buf + g
        g = g + opt.momentum * buf if opt.nesterov else buf
    return theta - opt.learning_rate * g, buf


def steps_per_epoch(rows: int, batch_size: int | None) -> int:
    size = rows if batch_size is None else min(batch_size, rows)
    return -(-rows // size)


@dataclass(frozen=True)
class Training:
    theta: Array
    steps: int
    history: list[float]


#: called after each epoch with (epoch, steps taken so far, the epoch's full-batch loss)
EpochCallback = Callable[[int, int, float], None]


def train(plan: Plan, batch: Batch, opt: SgdOptions, on_epoch: EpochCallback | None = None) -> Training:
    """Minibatch SGD over the batch; the loss is reported on the full batch after each epoch
    (to `on_epoch` too, as soon as it is known)."""
    assert batch.y is not None
    theta = plan.theta.copy()
    size = batch.size if opt.batch_size is None else min(opt.batch_size, batch.size)
    rng = np.random.default_rng(opt.seed)
    history, steps, buf = [], 0, None
    for epoch in range(opt.epochs):
        order = rng.permutation(batch.size) if opt.shuffle else None
        for start in range(0, batch.size, size):
            index = slice(start, start + size) if order is None else order[start : start + size]
            mini = batch.rows(index)
            assert mini.y is not None
            values = forward(plan, theta, mini.x)
            delta = backward(plan, theta, values, mini.y)
            grad = gradient(plan, values, delta, reduction_scale(opt.reduction, mini.size))
            theta, buf = sgd_step(theta, grad, buf, opt)
            steps += 1
        history.append(loss_value(plan, theta, batch, opt.reduction))
        if on_epoch is not None:
            on_epoch(epoch, steps, history[-1])
    return Training(theta, steps, history)
