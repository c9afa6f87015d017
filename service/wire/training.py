"""What /v1/sgd takes beyond plain SGD: the optimizers' names, the learning-rate schedules,
and the training state every answer carries and a request may post back."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field, StrictInt

from service.wire.base import ArrayValue, Column, UnitId, WireModel

#: the optimizers and schedules /v1/sgd takes: the names of the engine's registries
#: (service.engine.OPTIMIZERS, SCHEDULES), spelled out here so the wire needs no NumPy; a test
#: checks that they agree
OptimizerName = Literal["sgd", "adam", "adamw", "rmsprop", "adagrad"]
OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)
SCHEDULES: tuple[str, ...] = ("step", "exponential", "cosine")


class StepSchedule(WireModel):
    """torch.optim.lr_scheduler.StepLR: the rate times `gamma` every `step_size` epochs."""

    kind: Literal["step"]
    step_size: Annotated[StrictInt, Field(ge=1)]
    gamma: Annotated[float, Field(gt=0)] = 0.1


class ExponentialSchedule(WireModel):
    """torch.optim.lr_scheduler.ExponentialLR: the rate times `gamma` every epoch."""

    kind: Literal["exponential"]
    gamma: Annotated[float, Field(gt=0)]


class CosineSchedule(WireModel):
    """torch.optim.lr_scheduler.CosineAnnealingLR: from the rate down to `eta_min` over `t_max`
    epochs along a cosine, and up again after (as torch's does)."""

    kind: Literal["cosine"]
    t_max: Annotated[StrictInt, Field(ge=1)]
    eta_min: Annotated[float, Field(ge=0)] = 0.0


Schedule = Annotated[StepSchedule | ExponentialSchedule | CosineSchedule, Field(discriminator="kind")]


class Buffer(WireModel):
    """One optimizer buffer: an array per weight (in the network's order and shapes; for weights
    posted as columns, one column [n]), per bias and per response."""

    weights: Annotated[list[ArrayValue], Field(fail_fast=True)] | Column
    biases: Annotated[dict[UnitId, ArrayValue], Field(fail_fast=True)] = Field(default_factory=dict)
    responses: Annotated[dict[UnitId, ArrayValue], Field(fail_fast=True)] = Field(default_factory=dict)


class TrainingState(WireModel):
    """Where a training stands: every /v1/sgd answer carries it, and a request that posts it back
    as `state` continues as if the calls were one."""

    optimizer: OptimizerName
    step: Annotated[StrictInt, Field(ge=0, description="optimizer steps taken since the first call")]
    epoch: Annotated[StrictInt, Field(ge=0, description="epochs trained since the first call")]
    seed: Annotated[StrictInt, Field(ge=0)] | None = Field(
        default=None, description="the shuffle's seed (drawn by the service when shuffle had seed null)"
    )
    buffers: dict[str, Buffer] = Field(
        default_factory=dict,
        description="the optimizer's buffers by torch's names (momentum_buffer, exp_avg, exp_avg_sq, "
        "max_exp_avg_sq, square_avg, grad_avg, sum); sgd without momentum keeps none",
    )
