"""The backpropagation engine: NumPy and the standard library only.

A network, described in the engine's own terms (`network`), is checked and compiled once
(`compile`; a structure seen before, `reuse`) into a Plan (`plan`, its weights in sparse
`blocks`); samples are bound to it (`samples`); the passes (`passes`) compute values, dE/ds
and gradients a level at a time; `curvature` takes their
R-operator for Hessian-vector products; `sgd` trains, with an optimizer (`optimizers`) under a
schedule (`schedules`). Activations and losses are registries (`activations`, `losses`): each
entry holds its rule and its first and second derivatives, and everything else reads them; so
are optimizers (their hyper-parameters, buffers and step) and schedules. Errors are the
engine's own (`errors`), located in its network description; `deadline` stops long passes
cooperatively.
"""

from service.engine.activations import (
    ACTIVATIONS,
    ELEMENTWISE,
    Activation,
    derivative,
    leaky_relu,
    resolve,
    sigmoid,
    softmax,
)
from service.engine.compile import compile_network
from service.engine.curvature import Curvature, check_second_order, hvp
from service.engine.deadline import checkpoint, time_limit
from service.engine.errors import DeadlineExceeded, EngineError, GraphError, Problem, SamplesError
from service.engine.losses import LOSSES, Loss, Outputs, huber
from service.engine.network import AGGREGATIONS, Network, Unit, WeightColumns, WeightList
from service.engine.optimizers import OPTIMIZERS, Optimizer, initial_buffers
from service.engine.passes import (
    Offsets,
    Values,
    backward,
    backward_terms,
    forward,
    gradient,
    input_gradient,
    loss_gradient,
    loss_value,
    per_sample_gradient,
    reduction_scale,
    sample_losses,
    summed_delta,
)
from service.engine.plan import Block, Columns, Group, Level, Plan, UnitInfo, WeightGroup, WeightInfo
from service.engine.reuse import Plans, footprint, structure_key, with_parameters
from service.engine.samples import Batch, bind_samples
from service.engine.schedules import SCHEDULES, Schedule, rates
from service.engine.segments import Segments, segments
from service.engine.sgd import (
    EpochCallback,
    OptimizerState,
    SgdOptions,
    Training,
    permutation,
    sgd_step,
    steps_per_epoch,
    train,
)

__all__ = [
    "ACTIVATIONS",
    "AGGREGATIONS",
    "ELEMENTWISE",
    "LOSSES",
    "OPTIMIZERS",
    "SCHEDULES",
    "Activation",
    "Batch",
    "Block",
    "Columns",
    "Curvature",
    "DeadlineExceeded",
    "EngineError",
    "EpochCallback",
    "GraphError",
    "Group",
    "Level",
    "Loss",
    "Network",
    "Offsets",
    "Optimizer",
    "OptimizerState",
    "Outputs",
    "Plan",
    "Problem",
    "SamplesError",
    "Schedule",
    "Segments",
    "SgdOptions",
    "Training",
    "Unit",
    "UnitInfo",
    "Values",
    "WeightColumns",
    "WeightGroup",
    "WeightInfo",
    "WeightList",
    "backward",
    "backward_terms",
    "check_second_order",
    "bind_samples",
    "checkpoint",
    "compile_network",
    "Plans",
    "footprint",
    "structure_key",
    "with_parameters",
    "derivative",
    "forward",
    "gradient",
    "huber",
    "hvp",
    "input_gradient",
    "initial_buffers",
    "leaky_relu",
    "loss_gradient",
    "loss_value",
    "per_sample_gradient",
    "permutation",
    "rates",
    "reduction_scale",
    "resolve",
    "sample_losses",
    "segments",
    "sgd_step",
    "sigmoid",
    "softmax",
    "summed_delta",
    "steps_per_epoch",
    "time_limit",
    "train",
]
