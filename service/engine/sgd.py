"""Minibatch training: an optimizer of the registry (`optimizers`) under a learning-rate
schedule (`schedules`), resumable from the state a previous call ended with."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.engine.optimizers import OPTIMIZERS, initial_buffers, resolved
from service.engine.passes import backward, forward, gradient, loss_value, reduction_scale
from service.engine.plan import Plan
from service.engine.samples import Batch
from service.engine.schedules import rates

Array = np.ndarray

#: a drawn seed stays below 2**53, so any JSON reader (JavaScript's too) keeps it exact
SEED_BOUND = 2**53


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
    optimizer: str = "sgd"
    #: the optimizer's hyper-parameters given (the rest take its defaults); for sgd, momentum,
    #: nesterov and weight_decay above stand where these do not name them
    hyper: Mapping[str, Any] = field(default_factory=dict)
    schedule: str | None = None
    schedule_params: Mapping[str, Any] = field(default_factory=dict)

    def hyper_parameters(self) -> dict[str, Any]:
        """The chosen optimizer's hyper-parameters, resolved against its defaults."""
        given: dict[str, Any] = {}
        if self.optimizer == "sgd":
            given.update(momentum=self.momentum, nesterov=self.nesterov, weight_decay=self.weight_decay)
        return resolved(OPTIMIZERS[self.optimizer], {**given, **self.hyper})


@dataclass
class OptimizerState:
    """Where a training stands: optimizer steps and epochs taken so far, the optimizer's buffers
    (each a flat array like theta) and the shuffle's seed."""

    step: int = 0
    epoch: int = 0
    buffers: dict[str, Array] = field(default_factory=dict)
    seed: int | None = None


def sgd_step(theta: Array, grad: Array, buf: Array | None, opt: SgdOptions) -> tuple[Array, Array | None]:
    """One step of torch.optim.SGD's documented update; returns new (theta, momentum buffer)
    and changes nothing it was given."""
    buffers = {} if buf is None else {"momentum_buffer": buf}
    step = 1 if buf is None else 2  # (the first step starts the momentum buffer)
    theta = OPTIMIZERS["sgd"].step(theta, grad, buffers, step, opt.learning_rate, opt.hyper_parameters())
    return theta, buffers.get("momentum_buffer")


def steps_per_epoch(rows: int, batch_size: int | None) -> int:
    size = rows if batch_size is None else min(batch_size, rows)
    return -(-rows // size)


@dataclass(frozen=True)
class Training:
    theta: Array
    steps: int
    history: list[float]
    rates: list[float]  # the learning rate used during each epoch
    state: OptimizerState


#: called after each epoch with (epoch, steps taken so far, the epoch's full-batch loss)
EpochCallback = Callable[[int, int, float], None]


def permutation(seed: int, epoch: int, rows: int) -> Array:
    """Epoch `epoch`'s order of the samples: drawn from (seed, epoch) alone, so a training
    resumed at any epoch shuffles as one long training would."""
    return np.random.default_rng([seed, epoch]).permutation(rows)


def train(
    plan: Plan,
    batch: Batch,
    opt: SgdOptions,
    on_epoch: EpochCallback | None = None,
    state: OptimizerState | None = None,
) -> Training:
    """Minibatch training over the batch, from `state` (a fresh one when None); the loss is
    reported on the full batch after each epoch (to `on_epoch` too, as soon as it is known).
    `on_epoch` gets this call's epoch count from 0."""
    assert batch.y is not None
    optimizer = OPTIMIZERS[opt.optimizer]
    hyper = opt.hyper_parameters()
    theta = plan.theta.copy()
    if state is None:
        state = OptimizerState(buffers=initial_buffers(optimizer, hyper, plan.n_params))
    else:
        buffers = {name: value.copy() for name, value in state.buffers.items()}
        state = OptimizerState(state.step, state.epoch, buffers, state.seed)
    seed = opt.seed if opt.seed is not None else state.seed
    if opt.shuffle and seed is None:
        seed = secrets.randbelow(SEED_BOUND)
    state.seed = seed if opt.shuffle else state.seed
    size = batch.size if opt.batch_size is None else min(opt.batch_size, batch.size)
    lrs = rates(opt.schedule, opt.schedule_params, opt.learning_rate, state.epoch, opt.epochs)
    history, steps = [], 0
    for e, lr in enumerate(lrs):
        order = permutation(seed, state.epoch, batch.size) if opt.shuffle and seed is not None else None
        for start in range(0, batch.size, size):
            index = slice(start, start + size) if order is None else order[start : start + size]
            mini = batch.rows(index)
            assert mini.y is not None
            values = forward(plan, theta, mini.x)
            delta = backward(plan, theta, values, mini.y)
            grad = gradient(plan, values, delta, reduction_scale(opt.reduction, mini.size))
            state.step += 1
            theta = optimizer.step(theta, grad, state.buffers, state.step, lr, hyper)
            steps += 1
        state.epoch += 1
        history.append(loss_value(plan, theta, batch, opt.reduction))
        if on_epoch is not None:
            on_epoch(e, steps, history[-1])
    return Training(theta, steps, history, lrs, state)
