"""Every optimizer and schedule against torch.optim itself, in float64 (the `torch` extra).

torch trains the same hypothesis-drawn network with its own autograd, its optimizer (the
single-tensor path, `foreach=False`, which is what it runs on CPU) and its lr_scheduler
stepped at each epoch's end, on the same minibatches in the same shuffled order; after 50
steps or more every parameter agrees with the engine's to 1e-12 of the parameters' scale.
Only the activations whose rounding differences stay small over 50 steps are drawn (TAME: the
others amplify a last-bit difference by orders of magnitude a step, whatever the optimizer).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from service import engine
from tests.strategies import TAME, TORCH_EXACT_LOSSES, networks
from tests.support import compile_and_bind
from tests.torch_model import TorchNetwork, listed, relative_error, torch

#: the documented hyper-parameter combinations of each optimizer (each flag on and off, each
#: number away from its default)
COMBINATIONS: list[tuple[str, dict[str, Any]]] = [
    ("sgd", {}),
    ("sgd", {"momentum": 0.9}),
    ("sgd", {"momentum": 0.9, "dampening": 0.3}),
    ("sgd", {"momentum": 0.8, "nesterov": True}),
    ("sgd", {"momentum": 0.5, "weight_decay": 0.05}),
    ("adam", {}),
    ("adam", {"amsgrad": True}),
    ("adam", {"weight_decay": 0.05}),
    ("adam", {"betas": (0.8, 0.99), "eps": 1e-6, "amsgrad": True, "weight_decay": 0.01}),
    ("adamw", {}),
    ("adamw", {"amsgrad": True}),
    ("adamw", {"weight_decay": 0.1, "betas": (0.85, 0.995)}),
    ("rmsprop", {}),
    ("rmsprop", {"centered": True}),
    ("rmsprop", {"momentum": 0.5}),
    ("rmsprop", {"alpha": 0.9, "centered": True, "momentum": 0.3, "weight_decay": 0.01, "eps": 1e-6}),
    ("adagrad", {}),
    ("adagrad", {"lr_decay": 0.05}),
    ("adagrad", {"initial_accumulator_value": 0.1, "weight_decay": 0.01, "eps": 1e-8}),
]
SCHEDULES: list[dict[str, Any] | None] = [
    None,
    {"kind": "step", "step_size": 3, "gamma": 0.5},
    {"kind": "exponential", "gamma": 0.9},
    {"kind": "cosine", "t_max": 4, "eta_min": 0.001},  # past t_max it climbs again
]
#: the learning rate per optimizer: steps of about the same size
RATES = {"sgd": 0.05, "adam": 0.01, "adamw": 0.01, "rmsprop": 0.005, "adagrad": 0.05}
STEPS = 50

#: the largest relative error seen per optimizer (read by the report, `-s`)
LARGEST: dict[str, float] = {}


def _torch_schedule(optimizer: Any, schedule: dict[str, Any] | None) -> Any:
    lr_scheduler = torch.optim.lr_scheduler
    if schedule is None:
        return None
    if schedule["kind"] == "step":
        return lr_scheduler.StepLR(optimizer, step_size=schedule["step_size"], gamma=schedule["gamma"])
    if schedule["kind"] == "exponential":
        return lr_scheduler.ExponentialLR(optimizer, gamma=schedule["gamma"])
    return lr_scheduler.CosineAnnealingLR(optimizer, T_max=schedule["t_max"], eta_min=schedule["eta_min"])


TORCH_OPTIMIZERS = {
    "sgd": "SGD",
    "adam": "Adam",
    "adamw": "AdamW",
    "rmsprop": "RMSprop",
    "adagrad": "Adagrad",
}


def torch_train(
    net: dict[str, Any], samples: dict[str, Any], opt: engine.SgdOptions, nudge: bool = False
) -> tuple[Any, list[float]]:
    """torch's training of the same network: its parameters after, and each epoch's rate.
    With `nudge`, every initial parameter is first moved by its last bit."""
    model = TorchNetwork(net, samples)
    if nudge:
        with torch.no_grad():
            for p in model.parameters:
                p.copy_(torch.nextafter(p, torch.full_like(p, math.inf)))
    cls = getattr(torch.optim, TORCH_OPTIMIZERS[opt.optimizer])
    optimizer = cls(model.parameters, lr=opt.learning_rate, foreach=False, **dict(opt.hyper))
    scheduler = _torch_schedule(
        optimizer, None if opt.schedule is None else {"kind": opt.schedule, **opt.schedule_params}
    )
    size = opt.batch_size or model.batch
    rates = []
    for epoch in range(opt.epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        order = np.random.default_rng([opt.seed, epoch]).permutation(model.batch) if opt.shuffle else None
        order = np.arange(model.batch) if order is None else order
        for start in range(0, model.batch, size):
            optimizer.zero_grad()
            model.loss(torch.tensor(order[start : start + size]), opt.reduction).backward()
            for p in model.parameters:
                if p.grad is None:  # no path to an output: the API still updates it (decay, moments)
                    p.grad = torch.zeros_like(p)
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return model, rates


@st.composite
def trainings(draw: st.DrawFn) -> tuple[engine.SgdOptions, str]:
    """An optimizer with one of its combinations, a schedule, minibatches and a shuffle."""
    name, hyper = draw(st.sampled_from(COMBINATIONS))
    schedule = draw(st.sampled_from(SCHEDULES))
    options = engine.SgdOptions(
        learning_rate=RATES[name],
        batch_size=draw(st.sampled_from([None, 1, 2])),
        shuffle=draw(st.booleans()),
        seed=draw(st.integers(0, 2**32)),
        reduction=draw(st.sampled_from(["mean", "sum"])),
        optimizer=name,
        hyper=engine.optimizers.resolved(engine.OPTIMIZERS[name], hyper),
        schedule=None if schedule is None else schedule["kind"],
        schedule_params={} if schedule is None else {k: v for k, v in schedule.items() if k != "kind"},
    )
    return options, f"{name} {hyper} {schedule}"


@pytest.mark.slow
@settings(max_examples=120)
@given(networks(max_hidden=3, activations=TAME, losses=TORCH_EXACT_LOSSES), trainings())
def test_every_optimizer_agrees_with_torch_optim(
    case: tuple[dict[str, Any], dict[str, Any]], training: tuple[engine.SgdOptions, str]
) -> None:
    net, samples = case
    options, _ = training
    plan, batch = compile_and_bind(net, samples)
    per_epoch = engine.steps_per_epoch(batch.size, options.batch_size)
    options = engine.SgdOptions(**{**vars(options), "epochs": math.ceil(STEPS / per_epoch)})
    with np.errstate(all="ignore"):  # a draw that overflows compares nothing
        trained = engine.train(plan, batch, options)
    assume(np.isfinite(trained.theta).all() and all(np.isfinite(trained.history)))
    model, rates = torch_train(net, samples, options)
    assert trained.steps >= STEPS
    assert trained.rates == rates  # the same Python float arithmetic, in the same order
    expected = model.flat()
    assume(np.isfinite(expected).all())
    # a training that turns a last-bit change of its start into more than 1e-13 (one near
    # divergence, a unit crossing a kink) holds no rounding to 1e-12: torch against itself
    # would fail; such draws are rare (one in hundreds) and compare nothing
    nudged, _ = torch_train(net, samples, options, nudge=True)
    assume(relative_error(nudged.flat(), expected) <= 1e-13)
    error = relative_error(listed(plan, trained.theta), expected)
    LARGEST[options.optimizer] = max(LARGEST.get(options.optimizer, 0.0), error)
    assert error <= 1e-12, (error, training[1])


@pytest.mark.parametrize("schedule", [s for s in SCHEDULES if s is not None], ids=lambda s: s["kind"])
@pytest.mark.parametrize("base", [0.1, 0.0123])
def test_schedules_give_torchs_rates_for_hundreds_of_epochs(schedule: dict[str, Any], base: float) -> None:
    """Bit for bit: torch's chainable rates, not its closed form, which differs in the last bits."""
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=base)
    scheduler = _torch_schedule(optimizer, schedule)
    expected = []
    for _ in range(300):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    params = {k: v for k, v in schedule.items() if k != "kind"}
    assert engine.rates(schedule["kind"], params, base, 0, 300) == expected
    assert engine.rates(schedule["kind"], params, base, 123, 177) == expected[123:]  # resumed


def test_torch_defaults_are_the_registrys() -> None:
    """Each optimizer's hyper-parameters are torch's, by name and default (adamw's decay 0.01)."""
    for name, entry in engine.OPTIMIZERS.items():
        cls = getattr(torch.optim, TORCH_OPTIMIZERS[name])
        defaults = cls([torch.zeros(1, requires_grad=True)]).defaults
        for key, value in entry.hyper.items():
            assert defaults[key] == value, (name, key)
