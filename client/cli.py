"""`gradserve-client` (and `python -m client`): the API from the shell, JSON in and JSON out.

gradserve-client gradients request.json > mine.json  # {"network": ..., "samples": ...}
gradserve-client check --gradients mine.json request.json
gradserve-client gradients --network net.json --samples batch.json --per-sample --pretty
cat request.json | gradserve-client sgd --learning-rate 0.1 --epochs 20
gradserve-client import neat genome.json > net.json  # neat-python's network JSON, as a network
gradserve-client import onnx model.onnx > net.json  # needs the onnx extra
gradserve-client export onnx net.json -o model.onnx
gradserve-client gradients --binary --npz grads.npz big.json  # arrays as raw bytes both ways

The answer is printed as compact JSON on one line (for pipes and `jq`); `--pretty` indents it.
`--binary` sends the request's large arrays as raw bytes after its JSON (the binary framing);
`--npz PATH` asks for the answer framed the same way and writes its arrays to PATH, keyed by
their JSON paths (`gradients.weights.0.value`), printing the rest of the answer.
`sgd` shows its progress on stderr (epoch, loss, time left) when stderr is a terminal, or
with --progress: a tqdm bar with the `cli` extra (client._constants.install_hint), else a line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from client._client import Client
from client._constants import BASE64_MIN_ELEMENTS, install_hint
from client._errors import APIError, APIStatusError, NetworkImportError
from client._stream import followed
from client.arrays import binary_arrays, binary_of, numpy_available, to_numpy
from client.neat import from_neat
from client.onnx import from_onnx, to_onnx
from service.wire import ENDPOINTS, Network, SgdProgress


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
    for endpoint in ENDPOINTS.values():
        sub = commands.add_parser(endpoint.name, help=endpoint.summary, parents=[output])
        sub.add_argument("request", nargs="?", default="-", help="request JSON file, or - for stdin")
        for name, field in endpoint.request.model_fields.items():
            _option(sub, name, field)
        if endpoint.response is None:  # an answer that is not JSON: a drawing
            sub.add_argument("--output", "-o", metavar="FILE", help="write the answer here, not to stdout")
        else:
            _binary_options(sub)
    render = commands.choices["render"]
    render.add_argument("--format", choices=["svg", "dot"], help="the drawing's format (default svg)")
    commands.choices["sgd"].add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="stream the training and show epoch, loss and time left on stderr (default: when "
        "stderr is a terminal)",
    )
    imports = commands.add_parser(
        "import", help="a network made elsewhere as gradserve's network JSON (no server needed)"
    )
    kinds = imports.add_subparsers(dest="kind", required=True)
    for kind, (help, _) in IMPORTERS.items():
        sub = kinds.add_parser(kind, help=help, parents=[output])
        sub.add_argument("source", nargs="?", default="-", help="the file to import, or - for stdin")
    commands.add_parser("info", help="the server's version, activations, losses and limits", parents=[output])
    commands.add_parser("health", help="whether the server is up", parents=[output])
    _exports(commands)
    return parser


def _exports(commands: Any) -> None:
    """`export FORMAT FILE -o OUT` writes a network in another format (no server needed)."""
    exporting = commands.add_parser("export", help="write a network in another format (no server needed)")
    formats = exporting.add_subparsers(dest="kind", required=True)
    onnx = formats.add_parser("onnx", help="an ONNX model (float64, opset 17; needs the onnx extra)")
    onnx.add_argument(
        "network", nargs="?", default="-", help="the network JSON (or a request holding one), or -"
    )
    onnx.add_argument("--output", "-o", required=True, metavar="FILE", help="the .onnx file to write")


def _export(args: argparse.Namespace, stdin: TextIO) -> int:
    document = _read(args.network, stdin)
    if isinstance(document, dict) and "units" not in document and "network" in document:
        document = document["network"]  # a whole request: its network
    try:
        model = to_onnx(Network.model_validate(document))
        Path(args.output).write_bytes(model.SerializeToString())
    except (ImportError, NetworkImportError, ValidationError) as exc:
        print(f"gradserve-client: cannot export {args.network}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"gradserve-client: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


def _binary_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--binary",
        action="store_true",
        help=f"send the request's arrays of {BASE64_MIN_ELEMENTS} numbers or more as raw bytes after its "
        "JSON (the binary framing), not as JSON numbers",
    )
    sub.add_argument(
        "--npz",
        metavar="PATH",
        help="ask for the answer's arrays as raw bytes and write them to PATH (a NumPy .npz, keyed by "
        "JSON path: gradients.weights.0.value); the rest of the answer is printed, each array "
        'standing as {"npz": key, "shape": [...]}',
    )


#: request fields whose value is a JSON document of its own: given as --NAME FILE
_FILE_HELP = {
    "network": "a JSON file holding the network",
    "samples": "a JSON file holding the samples",
    "gradients": "your gradients to check: {weights, biases} as /v1/gradients gives them, or its "
    "whole answer (its gradients member is checked)",
    "schedule": 'a JSON file holding the learning-rate schedule, e.g. {"kind": "cosine", "t_max": 50}',
    "state": "a previous sgd answer, whose state continues the training from its network (that "
    "network replaces the request's unless --network is given), or a state alone",
}


def _option(sub: argparse.ArgumentParser, name: str, field: FieldInfo) -> None:
    """The command-line option of one request field, from its type in the wire schema: a flag
    pair for a bool, a choice for a Literal, a number, or a FILE for a document of its own."""
    flag = "--" + name.replace("_", "-")
    kind = _scalar(field.annotation)
    said = [field.description] if field.description else []
    if field.is_required():
        said.append("required here or in the request")
    elif field.default is not None and "default" not in (field.description or ""):
        said.append(f"default: {field.default}")  # a field without one says what its absence means
    text = "; ".join(said)
    pair = _numbers(field.annotation)
    if pair:  # a fixed number of numbers (adam's betas): that many values after the flag
        sub.add_argument(flag, nargs=pair, type=float, metavar=name.upper(), help=text)
    elif kind is None:
        sub.add_argument(flag, metavar="FILE", dest=f"{name}_file", help=_FILE_HELP.get(name, "a JSON file"))
    elif kind is bool:
        sub.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
    elif get_origin(kind) is Literal:
        sub.add_argument(flag, choices=get_args(kind), help=text)
    else:
        sub.add_argument(flag, type=kind, help=text)


def _numbers(annotation: Any) -> int:
    """How many numbers a field of a fixed tuple of numbers holds (0: it is no such field)."""
    if get_origin(annotation) in (Union, types.UnionType):
        kinds = [arg for arg in get_args(annotation) if arg is not type(None)]
        return _numbers(kinds[0]) if len(kinds) == 1 else 0
    if get_origin(annotation) is tuple:
        items = get_args(annotation)
        return len(items) if items and all(_scalar(item) in (int, float) for item in items) else 0
    return 0


def _scalar(annotation: Any) -> Any:
    """bool, int, float or a Literal for a field the command line can spell; None otherwise."""
    if get_origin(annotation) is Annotated:
        return _scalar(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        kinds = [arg for arg in get_args(annotation) if arg is not type(None)]
        return _scalar(kinds[0]) if len(kinds) == 1 else None
    if annotation in (bool, int, float) or get_origin(annotation) is Literal:
        return annotation
    return None


def _import_neat(source: str, stdin: TextIO) -> Network:
    return from_neat(_read(source, stdin))


def _import_onnx(source: str, stdin: TextIO) -> Network:
    try:
        return from_onnx(stdin.buffer.read() if source == "-" else source)  # a path: external data too
    except ImportError as exc:  # the onnx extra is not installed
        raise NetworkImportError(str(exc)) from None
    except OSError as exc:
        raise NetworkImportError(exc.strerror or str(exc)) from None


#: `gradserve-client import <kind> FILE`: each kind's help and its reader (a file or "-" in, a
#: Network out; what cannot be imported is a NetworkImportError)
IMPORTERS: dict[str, tuple[str, Callable[[str, TextIO], Network]]] = {
    "neat": (
        "neat-python's network JSON (neat.export.export_network_json, a FeedForwardNetwork)",
        _import_neat,
    ),
    "onnx": ("an ONNX model (Gemm, MatMul, Add and activations; needs the onnx extra)", _import_onnx),
}


def _import(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    try:
        network = IMPORTERS[args.kind][1](args.source, stdin)
    except NetworkImportError as exc:
        print(f"gradserve-client: cannot import {args.source}: {exc}", file=sys.stderr)
        return 1
    stdout.write(network.model_dump_json(indent=2 if args.pretty else None, exclude_none=True) + "\n")
    return 0


def _request(args: argparse.Namespace, stdin: TextIO) -> dict[str, Any]:
    model = ENDPOINTS[args.command].request
    files = {name: getattr(args, f"{name}_file", None) for name in model.model_fields}
    given = {name: path for name, path in files.items() if path}
    whole = {"network", "samples"} <= set(given)
    request: dict[str, Any] = {} if whole else _read(args.request, stdin)
    if not isinstance(request, dict):
        raise SystemExit("gradserve-client: the request must be a JSON object")
    for name, path in given.items():
        request[name] = _read(path, stdin)
    for name in model.model_fields:
        value = getattr(args, name, None)
        if value is not None:
            request[name] = value
    if "gradients" in request:
        request["gradients"] = _claimed(request["gradients"])
    if isinstance(request.get("state"), dict) and isinstance(request["state"].get("state"), dict):
        answer = request["state"]  # a whole sgd answer: its state, and its network unless given
        request["state"] = answer["state"]
        if not given.get("network") and "network" in answer:
            request["network"] = answer["network"]
    for name, field in model.model_fields.items():
        if field.is_required() and name not in request:
            flag = "--" + name.replace("_", "-")
            hint = f"{flag} FILE" if _scalar(field.annotation) is None else flag
            raise SystemExit(f"gradserve-client: {args.command} needs {hint} (or {name} in the request)")
    if getattr(args, "npz", None):
        if request.get("array_encoding", "binary") != "binary":
            raise SystemExit(
                "gradserve-client: --npz asks for a binary answer, not --array-encoding "
                + request["array_encoding"]
            )
        if not numpy_available():
            raise SystemExit(f"gradserve-client: --npz writes a NumPy file: {install_hint('numpy')}")
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


class _Bar:
    """A training's progress on stderr: tqdm's bar when it is installed (the `cli` extra),
    else a line of text (rewritten in place on a terminal)."""

    def __init__(self, stderr: TextIO) -> None:
        self.stderr = stderr
        self.started = time.monotonic()
        self.bar: Any = None
        self.tty = stderr.isatty()
        try:
            from tqdm import tqdm
        except ImportError:
            self.tqdm: Any = None
        else:
            self.tqdm = tqdm

    def __call__(self, p: SgdProgress) -> None:
        done = p.epoch + 1
        if self.tqdm is not None:
            if self.bar is None:
                self.bar = self.tqdm(total=p.epochs, unit="epoch", file=self.stderr, dynamic_ncols=True)
            self.bar.set_postfix_str(f"loss {p.loss:.6g}", refresh=False)
            self.bar.update(done - self.bar.n)
            return
        left = (time.monotonic() - self.started) / done * (p.epochs - done)
        line = f"epoch {done}/{p.epochs}  loss {p.loss:.6g}  {left:.1f} s left"
        self.stderr.write(f"\r{line}\x1b[K" if self.tty else line + "\n")
        self.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.tty:
            self.stderr.write("\n")


def _call(
    client: Client, args: argparse.Namespace, request: dict[str, Any], bar: _Bar | None = None
) -> BaseModel | str:
    if args.command == "info":
        return client.info()
    if args.command == "health":
        return client.health()
    if bar is not None:  # sgd, streamed
        return followed(client.sgd_stream(**request), bar)
    query = {"format": args.format} if getattr(args, "format", None) else {}
    result: BaseModel | str = client.call(args.command, request, **query)
    return result


_SEPARATORS = {False: (",", ":"), True: (",", ": ")}


def main(
    argv: Sequence[str] | None = None,
    stdin: TextIO = sys.stdin,
    stdout: TextIO = sys.stdout,
    stderr: TextIO | None = None,
) -> int:
    stderr = stderr or sys.stderr
    args = _parser().parse_args(argv)
    if args.command == "import":
        return _import(args, stdin, stdout)
    if args.command == "export":
        return _export(args, stdin)
    request = {} if args.command in ("info", "health") else _request(args, stdin)
    shown = args.command == "sgd" and (args.progress if args.progress is not None else stderr.isatty())
    bar = _Bar(stderr) if shown else None
    try:
        with Client(base_url=args.url, api_key=args.api_key, timeout=args.timeout) as client:
            result = _call(client, args, request, bar)
    except APIStatusError as exc:
        print(f"gradserve-client: {exc.status_code}: {exc.detail}", file=stderr)
        return 1
    except APIError as exc:
        print(f"gradserve-client: {exc.message}", file=stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()
    if isinstance(result, str):
        if getattr(args, "output", None):
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
