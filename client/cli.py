"""`gradserve-client` (and `python -m client`): the API from the shell, JSON in and JSON out.

gradserve-client gradients request.json > mine.json  # {"network": ..., "samples": ...}
gradserve-client check --gradients mine.json request.json
gradserve-client gradients --network net.json --samples batch.json --per-sample --pretty
cat request.json | gradserve-client sgd --learning-rate 0.1 --epochs 20
gradserve-client gradients --binary --npz grads.npz big.json  # arrays as raw bytes both ways

The answer is printed as compact JSON on one line (for pipes and `jq`); `--pretty` indents it.
`--binary` sends the request's large arrays as raw bytes after its JSON (the binary framing);
`--npz PATH` asks for the answer framed the same way and writes its arrays to PATH, keyed by
their JSON paths (`gradients.weights.0.value`), printing the rest of the answer.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel

from client._client import Client
from client._constants import BASE64_MIN_ELEMENTS
from client._errors import APIError, APIStatusError
from client.arrays import binary_arrays, binary_of, numpy_available, to_numpy


def _read(source: str, stdin: TextIO) -> Any:
    try:
        text = stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise SystemExit(f"gradserve-client: cannot read {source}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = "standard input" if source == "-" else source
        raise SystemExit(f"gradserve-client: {where} is not JSON: {exc}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradserve-client",
        description="Call a gradserve server. A request is read from a file or standard input "
        '(\'-\', the default) as {"network": ..., "samples": ..., options...}; --network and '
        "--samples read those two from files instead. The answer is printed as compact JSON "
        "on one line; --pretty indents it.",
    )
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--pretty", action="store_true", help="print the answer indented, not on one line")
    parser.add_argument("--url", help="the server (default: $GRADSERVE_URL, else http://127.0.0.1:8000)")
    parser.add_argument("--api-key", help="the API key (default: $GRADSERVE_API_KEY)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds (default %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True)

    def compute(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, parents=[output])
        sub.add_argument("request", nargs="?", default="-", help="request JSON file, or - for stdin")
        sub.add_argument("--network", help="a JSON file holding the network")
        sub.add_argument("--samples", help="a JSON file holding the samples")
        sub.add_argument("--base64", action="store_true", help="answer arrays base64-encoded")
        if name != "render":
            sub.add_argument(
                "--binary",
                action="store_true",
                help=f"send the request's arrays of {BASE64_MIN_ELEMENTS} numbers or more as raw bytes after "
                "its JSON (the binary framing), not as JSON numbers",
            )
            sub.add_argument(
                "--npz",
                metavar="PATH",
                help="ask for the answer's arrays as raw bytes and write them to PATH (a NumPy .npz, "
                "keyed by JSON path: gradients.weights.0.value); the rest of the answer is printed, "
                'each array standing as {"npz": key, "shape": [...]}',
            )
        return sub

    compute("forward", "every unit's values")
    grads = compute("gradients", "the loss's gradient for every weight and bias")
    grads.add_argument("--reduction", choices=["mean", "sum"])
    grads.add_argument("--per-sample", action="store_true", default=None)
    grads.add_argument("--no-units", dest="include_units", action="store_false", default=None)
    sgd = compute("sgd", "train with SGD; prints the updated network and the loss history")
    sgd.add_argument("--learning-rate", type=float, help="required here or in the request")
    sgd.add_argument("--epochs", type=int)
    sgd.add_argument("--batch-size", type=int)
    sgd.add_argument("--shuffle", action="store_true", default=None)
    sgd.add_argument("--seed", type=int)
    sgd.add_argument("--momentum", type=float)
    sgd.add_argument("--nesterov", action="store_true", default=None)
    sgd.add_argument("--weight-decay", type=float)
    sgd.add_argument("--reduction", choices=["mean", "sum"])
    explain = compute("explain", "why each gradient has its value: deltas, terms, paths (one sample)")
    explain.add_argument("--sample", type=int)
    explain.add_argument("--max-paths", type=int)
    check = compute("check", "gradients checked by central finite differences")
    check.add_argument(
        "--gradients",
        metavar="FILE",
        help="your gradients to check: {weights, biases} as /v1/gradients gives them, or its whole "
        "answer (its gradients member is checked)",
    )
    check.add_argument("--reduction", choices=["mean", "sum"])
    check.add_argument("--epsilon", type=float)
    check.add_argument("--rtol", type=float)
    check.add_argument("--atol", type=float)
    draw = compute("render", "draw the network as SVG (or Graphviz DOT)")
    draw.add_argument("--show", choices=["weights", "gradients"])
    draw.add_argument("--format", choices=["svg", "dot"])
    draw.add_argument("--output", "-o", metavar="FILE", help="write the drawing here instead of to stdout")
    commands.add_parser("info", help="the server's version, activations, losses and limits", parents=[output])
    commands.add_parser("health", help="whether the server is up", parents=[output])
    return parser


OPTIONS = ("reduction", "per_sample", "include_units", "epochs", "batch_size", "shuffle", "seed",
           "momentum", "nesterov", "weight_decay", "sample", "max_paths", "epsilon", "rtol", "atol",
           "show", "format")  # fmt: skip


def _request(args: argparse.Namespace, stdin: TextIO) -> dict[str, Any]:
    files = (args.network, args.samples)
    request: dict[str, Any] = {} if all(files) else _read(args.request, stdin)
    if not isinstance(request, dict):
        raise SystemExit("gradserve-client: the request must be a JSON object")
    if args.network:
        request["network"] = _read(args.network, stdin)
    if args.samples:
        request["samples"] = _read(args.samples, stdin)
    needed = ("network",) if args.command == "render" else ("network", "samples")
    for name in needed:
        if name not in request:
            raise SystemExit(f"gradserve-client: the request has no {name!r} (or pass --{name} FILE)")
    for name in OPTIONS:
        value = getattr(args, name, None)
        if value is not None:
            request[name] = value
    if getattr(args, "gradients", None):
        request["gradients"] = _claimed(_read(args.gradients, stdin))
    if args.base64:
        request["array_encoding"] = "base64"
    if getattr(args, "npz", None):
        if args.base64:
            raise SystemExit("gradserve-client: --npz and --base64 ask for different answers: pick one")
        if not numpy_available():
            raise SystemExit("gradserve-client: --npz writes a NumPy file: install NumPy (gradserve[numpy])")
        request["array_encoding"] = "binary"
    if getattr(args, "binary", False):
        request = _binary(request)
    return request


def _binary(value: Any) -> Any:
    """The request with each array of BASE64_MIN_ELEMENTS numbers or more (nested lists) made
    a binary array, sent as raw bytes."""
    if isinstance(value, dict):
        return {key: _binary(item) for key, item in value.items()}
    if isinstance(value, list) and value:
        made = binary_of(value, BASE64_MIN_ELEMENTS)
        if made is not None:
            return made
        return [_binary(item) for item in value]
    return value


def _npz(result: BaseModel, path: str) -> dict[str, Any]:
    """Write the answer's binary arrays to `path`; the answer's JSON with each array standing
    as {"npz": key, "shape": [...]}."""
    import numpy as np

    savez: Any = np.savez  # (its stubs take the keyword arrays for its one flag)
    document = result.model_dump(mode="json", exclude_none=True)
    arrays = {}
    for where, array in binary_arrays(result):
        key = ".".join(map(str, where))
        arrays[key] = to_numpy(array)
        document = _put(document, where, {"npz": key, "shape": list(array.shape)})
    try:
        with open(path, "wb") as file:
            savez(file, **arrays)
    except OSError as exc:
        raise SystemExit(f"gradserve-client: cannot write {path}: {exc.strerror}") from None
    return document


def _put(node: Any, path: tuple[str | int, ...], value: Any) -> Any:
    if not path:
        return value
    node[path[0]] = _put(node[path[0]], path[1:], value)
    return node


def _claimed(gradients: Any) -> Any:
    """The gradients to check: a whole /v1/gradients answer (what `gradserve-client gradients`
    prints) stands for its `gradients` member."""
    if isinstance(gradients, dict) and isinstance(gradients.get("gradients"), dict):
        return gradients["gradients"]
    return gradients


def _call(client: Client, command: str, request: dict[str, Any]) -> BaseModel | str:
    if command == "info":
        return client.info()
    if command == "health":
        return client.health()
    network, samples = request.pop("network"), request.pop("samples", None)
    if command == "render":
        return client.render(network, samples, **request)
    if command == "forward":
        return client.forward(network, samples, array_encoding=request.get("array_encoding"))
    if command == "gradients":
        return client.gradients(network, samples, **request)
    if command == "explain":
        return client.explain(network, samples, **request)
    if command == "check":
        return client.check(network, samples, **request)
    rate = request.pop("learning_rate", None)
    if rate is None:
        raise SystemExit("gradserve-client: sgd needs --learning-rate (or learning_rate in the request)")
    return client.sgd(network, samples, rate, **request)


_SEPARATORS = {False: (",", ":"), True: (",", ": ")}


def main(argv: Sequence[str] | None = None, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    args = _parser().parse_args(argv)
    request = {} if args.command in ("info", "health") else _request(args, stdin)
    if getattr(args, "learning_rate", None) is not None:
        request["learning_rate"] = args.learning_rate
    try:
        with Client(base_url=args.url, api_key=args.api_key, timeout=args.timeout) as client:
            result = _call(client, args.command, request)
    except TypeError as exc:  # an option the endpoint does not take
        print(f"gradserve-client: {exc}", file=sys.stderr)
        return 2
    except APIStatusError as exc:
        print(f"gradserve-client: {exc.status_code}: {exc.detail}", file=sys.stderr)
        return 1
    except APIError as exc:
        print(f"gradserve-client: {exc.message}", file=sys.stderr)
        return 1
    if isinstance(result, str):
        if args.output:
            Path(args.output).write_text(result)
        else:
            stdout.write(result)
        return 0
    if getattr(args, "npz", None):
        document = _npz(result, args.npz)
        stdout.write(
            json.dumps(document, indent=2 if args.pretty else None, separators=_SEPARATORS[args.pretty])
        )
        stdout.write("\n")
    else:
        stdout.write(result.model_dump_json(indent=2 if args.pretty else None, exclude_none=True) + "\n")
    if args.command == "check" and not getattr(result, "ok", True):
        return 3  # the gradients did not pass: scripts can tell
    return 0


def entry() -> None:
    """The console script."""
    sys.exit(main())
