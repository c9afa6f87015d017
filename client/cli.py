"""`gradserve-client` (and `python -m client`): the API from the shell, JSON in and JSON out.

gradserve-client gradients request.json > mine.json  # {"network": ..., "samples": ...}
gradserve-client check --gradients mine.json request.json
gradserve-client gradients --network net.json --samples batch.json --per-sample --pretty
cat request.json | gradserve-client sgd --learning-rate 0.1 --epochs 20

The answer is printed as compact JSON on one line (for pipes and `jq`); `--pretty` indents it.
`sgd` shows its progress on stderr (epoch, loss, time left) when stderr is a terminal, or
with --progress: a tqdm bar with the `cli` extra (pip install 'gradserve[cli]'), else a line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel

from client._client import Client
from client._errors import APIError, APIStatusError
from service.wire import SgdProgress


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
    sgd.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="stream the training and show epoch, loss and time left on stderr (default: when "
        "stderr is a terminal)",
    )
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
    return request


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


def _call(client: Client, command: str, request: dict[str, Any], bar: _Bar | None = None) -> BaseModel | str:
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
    return client.sgd(network, samples, rate, **request, progress=bar)


def main(
    argv: Sequence[str] | None = None,
    stdin: TextIO = sys.stdin,
    stdout: TextIO = sys.stdout,
    stderr: TextIO | None = None,
) -> int:
    stderr = stderr or sys.stderr
    args = _parser().parse_args(argv)
    request = {} if args.command in ("info", "health") else _request(args, stdin)
    if getattr(args, "learning_rate", None) is not None:
        request["learning_rate"] = args.learning_rate
    shown = args.command == "sgd" and (args.progress if args.progress is not None else stderr.isatty())
    bar = _Bar(stderr) if shown else None
    try:
        with Client(base_url=args.url, api_key=args.api_key, timeout=args.timeout) as client:
            result = _call(client, args.command, request, bar)
    except TypeError as exc:  # an option the endpoint does not take
        print(f"gradserve-client: {exc}", file=stderr)
        return 2
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
        if args.output:
            Path(args.output).write_text(result)
        else:
            stdout.write(result)
        return 0
    stdout.write(result.model_dump_json(indent=2 if args.pretty else None, exclude_none=True) + "\n")
    if args.command == "check" and not getattr(result, "ok", True):
        return 3  # the gradients did not pass: scripts can tell
    return 0


def entry() -> None:
    """The console script."""
    sys.exit(main())
