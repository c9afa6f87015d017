"""The optimizers: one registry entry each, holding torch.optim's hyper-parameters (names and
defaults), the buffers it keeps (torch's state names) and its step.

Every parameter lives in one flat vector theta, and each update below is elementwise, so a
step over theta is torch's step over each parameter tensor at once. Each step follows the
operations of torch.optim's `_single_tensor_*` function of the optimizer in their order
(torch 2.13: `a.add(b, alpha=c)` is a + c*b, `addcmul(b, c, value=v)` a + (v*b)*c,
`addcdiv(b, c, value=v)` a + (v*b)/c, `lerp(b, w)` a + w*(b - a) for |w| < 0.5, else
b - (b - a)*(1 - w)), so float64 results agree with torch's to rounding (torch's vectorised
kernels fuse some multiply-adds). Adding an optimizer is one entry in OPTIMIZERS (and its
name in the wire's OptimizerName), plus its tests against torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

Array = np.ndarray
Hyper = Mapping[str, Any]


@dataclass(frozen=True)
class Optimizer:
    """An optimizer: `hyper` its hyper-parameters and their defaults (torch's); `buffers` the
    state it keeps under given hyper-parameters (torch's names, each an array like theta);
    `check` what torch refuses of a combination (None: fine); `step` one update, given theta,
    the gradient, the buffers (updated in place), the step's number (1 for the first, as
    torch's `state["step"]` after its increment) and the learning rate, returning the new theta."""

    name: str
    hyper: Mapping[str, Any]
    buffers: Callable[[Hyper], tuple[str, ...]]
    step: Callable[[Array, Array, dict[str, Array], int, float, Hyper], Array]
    check: Callable[[Hyper], str | None] = lambda hyper: None
    #: a buffer's value before the first step (zeros, unless named here)
    initial: Callable[[str, Hyper], float] = lambda buffer, hyper: 0.0


def _lerp(start: Array, end: Array, weight: float) -> Array:
    """torch.lerp's formula, exact at both ends."""
    if abs(weight) < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1.0 - weight)


def _decayed(grad: Array, theta: Array, weight_decay: float) -> Array:
    """L2 weight decay folded into the gradient: grad.add(param, alpha=weight_decay)."""
    return grad + weight_decay * theta if weight_decay else grad


# ---------------------------------------------------------------- SGD


def _sgd_buffers(h: Hyper) -> tuple[str, ...]:
    return ("momentum_buffer",) if h["momentum"] else ()


def _sgd_check(h: Hyper) -> str | None:
    if h["nesterov"] and (h["momentum"] <= 0 or h["dampening"] != 0):
        return "nesterov needs momentum > 0 and dampening 0 (as in torch.optim.SGD)"
    return None


def _sgd_step(theta: Array, grad: Array, buffers: dict[str, Array], step: int, lr: float, h: Hyper) -> Array:
    g = _decayed(grad, theta, h["weight_decay"])
    momentum = h["momentum"]
    if momentum:
        buf = buffers.get("momentum_buffer")
        if step == 1 or buf is None:  # torch's is None until the first step, which sets it to g
            buf = g.copy()
        elif h["dampening"]:
            buf = momentum * buf + (1 - h["dampening"]) * g
        else:
            buf = momentum * buf + g
        buffers["momentum_buffer"] = buf
        g = g + momentum * buf if h["nesterov"] else buf
    return theta - lr * g


# ---------------------------------------------------------------- Adam and AdamW


def _adam_buffers(h: Hyper) -> tuple[str, ...]:
    return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if h["amsgrad"] else ("exp_avg", "exp_avg_sq")


def _adam_check(h: Hyper) -> str | None:
    for i, beta in enumerate(h["betas"]):
        if not 0 <= beta < 1:
            return f"betas[{i}] must be in [0, 1) (as in torch.optim), not {beta!r}"
    return None


def _adam(decoupled: bool) -> Callable[[Array, Array, dict[str, Array], int, float, Hyper], Array]:
    def step(theta: Array, grad: Array, buffers: dict[str, Array], step: int, lr: float, h: Hyper) -> Array:
        beta1, beta2 = h["betas"]
        weight_decay = h["weight_decay"]
        if weight_decay and decoupled:
            theta = theta * (1 - lr * weight_decay)
        elif weight_decay:
            grad = grad + weight_decay * theta
        exp_avg = buffers["exp_avg"] = _lerp(buffers["exp_avg"], grad, 1 - beta1)
        exp_avg_sq = buffers["exp_avg_sq"] = buffers["exp_avg_sq"] * beta2 + ((1 - beta2) * grad) * grad
        bias_correction1 = 1 - beta1 ** float(step)
        bias_correction2 = 1 - beta2 ** float(step)
        step_size = lr / bias_correction1
        bias_correction2_sqrt = math.sqrt(bias_correction2)
        if h["amsgrad"]:
            exp_avg_sq = buffers["max_exp_avg_sq"] = np.maximum(buffers["max_exp_avg_sq"], exp_avg_sq)
        denom = np.sqrt(exp_avg_sq) / bias_correction2_sqrt + h["eps"]
        return theta + (-step_size * exp_avg) / denom

    return step


# ---------------------------------------------------------------- RMSprop


def _rmsprop_buffers(h: Hyper) -> tuple[str, ...]:
    return (
        "square_avg",
        *(("momentum_buffer",) if h["momentum"] > 0 else ()),
        *(("grad_avg",) if h["centered"] else ()),
    )


def _rmsprop_step(
    theta: Array, grad: Array, buffers: dict[str, Array], step: int, lr: float, h: Hyper
) -> Array:
    alpha = h["alpha"]
    grad = _decayed(grad, theta, h["weight_decay"])
    square_avg = buffers["square_avg"] = buffers["square_avg"] * alpha + ((1 - alpha) * grad) * grad
    if h["centered"]:
        grad_avg = buffers["grad_avg"] = _lerp(buffers["grad_avg"], grad, 1 - alpha)
        avg = np.sqrt(square_avg + (-1.0 * grad_avg) * grad_avg)
    else:
        avg = np.sqrt(square_avg)
    avg = avg + h["eps"]
    if h["momentum"] > 0:
        buf = buffers["momentum_buffer"] = buffers["momentum_buffer"] * h["momentum"] + grad / avg
        return theta + -lr * buf
    return theta + (-lr * grad) / avg


# ---------------------------------------------------------------- Adagrad


def _adagrad_step(
    theta: Array, grad: Array, buffers: dict[str, Array], step: int, lr: float, h: Hyper
) -> Array:
    grad = _decayed(grad, theta, h["weight_decay"])
    clr = lr / (1 + (step - 1) * h["lr_decay"])
    state_sum = buffers["sum"] = buffers["sum"] + grad * grad
    std = np.sqrt(state_sum) + h["eps"]
    return theta + (-clr * grad) / std


#: every optimizer, by the name `/v1/sgd` takes (torch.optim's class, lower-cased)
OPTIMIZERS: dict[str, Optimizer] = {
    o.name: o
    for o in (
        Optimizer(
            "sgd",
            {"momentum": 0.0, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0},
            _sgd_buffers,
            _sgd_step,
            _sgd_check,
        ),
        Optimizer(
            "adam",
            {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False},
            _adam_buffers,
            _adam(decoupled=False),
            _adam_check,
        ),
        Optimizer(
            "adamw",
            {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01, "amsgrad": False},
            _adam_buffers,
            _adam(decoupled=True),
            _adam_check,
        ),
        Optimizer(
            "rmsprop",
            {"alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0, "centered": False},
            _rmsprop_buffers,
            _rmsprop_step,
        ),
        Optimizer(
            "adagrad",
            {"lr_decay": 0.0, "weight_decay": 0.0, "initial_accumulator_value": 0.0, "eps": 1e-10},
            lambda h: ("sum",),
            _adagrad_step,
            initial=lambda buffer, h: float(h["initial_accumulator_value"]),
        ),
    )
}


def resolved(optimizer: Optimizer, given: Mapping[str, Any]) -> dict[str, Any]:
    """The optimizer's hyper-parameters: those given, the defaults for the rest."""
    return {name: given.get(name, default) for name, default in optimizer.hyper.items()}


def initial_buffers(optimizer: Optimizer, hyper: Hyper, n_params: int) -> dict[str, Array]:
    """The buffers before the first step."""
    return {name: np.full(n_params, optimizer.initial(name, hyper)) for name in optimizer.buffers(hyper)}
