"""The gradserve Python client: typed, sync and async, with NumPy optional.

from client import Client
with Client() as gs:
    result = gs.gradients(network, samples)
    for event in gs.sgd_stream(network, samples, 0.1, epochs=500):  # SgdProgress..., SgdResponse
        print(event)
"""

from client._async_client import AsyncClient
from client._client import Client
from client._errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    NetworkImportError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    UnprocessableEntityError,
)
from client.arrays import BinaryArray, to_list, to_numpy
from client.builders import mlp, single_units
from client.display import Explanation, Svg, Training
from client.neat import from_neat
from client.onnx import OnnxError, from_onnx, to_onnx
from service.wire import (
    CheckResponse,
    EncodedArray,
    ExplainResponse,
    ForwardResponse,
    GradientColumns,
    Gradients,
    GradientsResponse,
    Health,
    HessianVector,
    HvpResponse,
    InfoResponse,
    Network,
    ParameterVector,
    Samples,
    SgdProgress,
    SgdResponse,
    TrainingState,
    Unit,
    UnitValues,
    Weight,
    WeightColumns,
    WeightGradient,
)

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "BinaryArray",
    "CheckResponse",
    "Client",
    "EncodedArray",
    "Explanation",
    "ExplainResponse",
    "ForwardResponse",
    "GradientColumns",
    "Gradients",
    "GradientsResponse",
    "Health",
    "HessianVector",
    "HvpResponse",
    "InfoResponse",
    "InternalServerError",
    "Network",
    "NetworkImportError",
    "NotFoundError",
    "OnnxError",
    "ParameterVector",
    "PayloadTooLargeError",
    "RateLimitError",
    "Samples",
    "SgdProgress",
    "SgdResponse",
    "Svg",
    "Training",
    "TrainingState",
    "Unit",
    "UnitValues",
    "UnprocessableEntityError",
    "Weight",
    "WeightColumns",
    "WeightGradient",
    "from_neat",
    "from_onnx",
    "mlp",
    "single_units",
    "to_list",
    "to_numpy",
    "to_onnx",
]
