"""Against torch itself (the `torch` extra: `pip install '.[torch]'`).

The engine's SGD follows torch.optim.SGD's documented update; here torch's own optimizer,
on torch's own autograd (tests/torch_model.py), trains the same random networks, every
activation and loss drawn, and must agree to 1e-9 (tests/test_optimizers.py holds every
optimizer to 1e-12 on the activations that keep rounding differences small). One difference
is deliberate: torch skips a parameter whose .grad is None (one with no path to the loss),
while the documented update, which the API applies to every weight and bias, still decays
it; so such parameters get a zero .grad here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import assume, given, settings

from service import engine
from tests.strategies import TORCH_EXACT_LOSSES, networks, sgd_options
from tests.support import compile_and_bind
from tests.torch_model import TorchNetwork, listed, torch


def torch_train(net: dict[str, Any], samples: dict[str, Any], opt: engine.SgdOptions) -> np.ndarray:
    model = TorchNetwork(net, samples)
    sgd = torch.optim.SGD(
        model.parameters,
        lr=opt.learning_rate,
        momentum=opt.momentum,
        nesterov=opt.nesterov,
        weight_decay=opt.weight_decay,
    )
    step = opt.batch_size or model.batch
    for epoch in range(opt.epochs):
        # the API's shuffle: epoch e's permutation from a generator seeded by (seed, e)
        order = np.random.default_rng([opt.seed, epoch]).permutation(model.batch) if opt.shuffle else None
        order = np.arange(model.batch) if order is None else order
        for start in range(0, model.batch, step):
            sgd.zero_grad()
            model.loss(torch.tensor(order[start : start + step]), opt.reduction).backward()
            for p in model.parameters:
                if p.grad is None:  # no path to an output: the documented update still decays it
                    p.grad = torch.zeros_like(p)
            sgd.step()
    return model.flat()


@settings(max_examples=40)
@given(networks(max_hidden=3, losses=TORCH_EXACT_LOSSES), sgd_options(batch_sizes=(None, 2)))
def test_sgd_agrees_with_torch_optim_sgd(
    case: tuple[dict[str, Any], dict[str, Any]], opt: engine.SgdOptions
) -> None:
    net, samples = case
    plan, batch = compile_and_bind(net, samples)
    with np.errstate(all="ignore"):  # a draw that diverges (overflows) compares nothing
        trained = engine.train(plan, batch, opt)
        expected = torch_train(net, samples, opt)
    assume(np.isfinite(trained.theta).all() and np.isfinite(expected).all())
    # nor does one on its way there (parameters past 1e6 from a start within 1): a divergence
    # turns the last bit of any step into the leading digits of the next
    assume(np.abs(expected).max() < 1e6)
    np.testing.assert_allclose(listed(plan, trained.theta), expected, rtol=1e-9, atol=1e-12)
