"""The README's code blocks as tests: which are examples, what each shows, how it is compared.

Every fenced block of README.md stands right after one marker comment (README's Development
section says so):

- `<!-- example: NAME -->`: a command block (`sh` or `python`) run from a copy of `examples/`
  against a live server;
- `<!-- output: NAME -->`: what example NAME prints, in order (one or more blocks);
- `<!-- file: PATH -->`: the contents of PATH in the repository, to the byte;
- `<!-- not-tested: REASON -->`: a block that cannot run here, and why.

An output is compared with what the example printed: a `json` block holds JSON documents,
each matched by the next one printed, its objects' members a subset of the printed ones (the
README may leave members out, never change them); any other block is lines, where a line
`...` stands for any lines and `...` within a line for any text. Everywhere, a number shown
with fewer digits matches the printed one rounded to those digits, and any number matches one
within 1e-9 of it relatively (the last bits of a sum depend on how the machine's BLAS rounds).
The server's address is the only other thing that differs: `http://127.0.0.1:8000` in a
command is the live server's.
"""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLES = ROOT / "examples"
#: the address commands in the README use; the tests put the live server's in its place
README_URL = "http://127.0.0.1:8000"

_MARKED = re.compile(
    r"<!-- (example|output|file|not-tested): *(.*?) *-->[ \t]*\n[ \t]*```(\S*)\n(.*?)^[ \t]*```", re.M | re.S
)
_FENCE = re.compile(r"^[ \t]*```", re.M)  # in a list item too
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


@dataclass
class Example:
    name: str
    lang: str
    code: str
    line: int
    outputs: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Readme:
    examples: dict[str, Example]
    files: list[tuple[str, str]]  # (path, the block's text)
    untested: list[tuple[int, str]]  # (line, reason)
    unmarked: list[int]  # lines of blocks without a marker
    problems: list[str]


def parse(text: str) -> Readme:
    marked: dict[int, re.Match[str]] = {}
    for m in _MARKED.finditer(text):
        marked[text.rindex("\n", 0, m.start(3)) + 1] = m  # by the start of its fence's line
    readme = Readme({}, [], [], [], [])
    fences = [m.start() for m in _FENCE.finditer(text)]
    openings = fences[0::2]  # fences alternate: opening, closing
    for start in openings:
        line = text.count("\n", 0, start) + 1
        found = marked.get(start)
        if found is None:
            readme.unmarked.append(line)
            continue
        kind, value, lang, body = found.groups()
        body = textwrap.dedent(body)  # a block in a list item is indented
        if kind == "example":
            if value in readme.examples:
                readme.problems.append(f"line {line}: a second example named {value!r}")
            readme.examples[value] = Example(value, lang, body, line)
        elif kind == "output":
            if value not in readme.examples:
                readme.problems.append(f"line {line}: an output of {value!r}, which no example before it is")
            else:
                readme.examples[value].outputs.append((lang, body))
        elif kind == "file":
            readme.files.append((value, body))
        elif not value:
            readme.problems.append(f"line {line}: not-tested needs a reason")
        else:
            readme.untested.append((line, value))
    for name, example in readme.examples.items():
        if example.lang not in ("sh", "python"):
            readme.problems.append(f"example {name!r}: a {example.lang!r} block cannot run (sh or python)")
    return readme


def read() -> Readme:
    return parse(README.read_text())


# ---------------------------------------------------------------- comparing


def number_matches(shown: str, printed: str) -> bool:
    s, p = Decimal(shown), Decimal(printed)
    if s == p or abs(s - p) <= Decimal("1e-9") * max(abs(s), abs(p)):
        return True
    exponent = s.as_tuple().exponent
    assert isinstance(exponent, int)
    if "e" in shown.lower():  # shown as 2.020e-15: the printed one written with as many digits
        digits = len(shown.lower().split("e")[0].lstrip("-").replace(".", "")) - 1
        return f"{float(p):.{digits}e}" == f"{float(s):.{digits}e}"
    return p.quantize(Decimal(1).scaleb(exponent)) == s  # rounded half to even, as Python prints


def _numbers(text: str) -> list[str]:
    return _NUMBER.findall(text)


def line_matches(shown: str, printed: str) -> bool:
    pattern = "".join(
        ".*?" if piece == "..." else f"({_NUMBER.pattern})" if _NUMBER.fullmatch(piece) else re.escape(piece)
        for piece in re.split(rf"(\.\.\.|{_NUMBER.pattern})", shown)
        if piece
    )
    m = re.fullmatch(pattern, printed)
    if m is None:
        return False
    shown_numbers = [p for p in re.split(r"(\.\.\.)", shown) if p != "..."]
    wanted = [n for part in shown_numbers for n in _numbers(part)]
    return all(number_matches(s, p) for s, p in zip(wanted, m.groups(), strict=True))


def lines_match(shown: list[str], printed: list[str]) -> bool:
    if not shown:
        return not printed
    if shown[0].strip() == "...":
        return any(lines_match(shown[1:], printed[k:]) for k in range(len(printed) + 1))
    return bool(printed) and line_matches(shown[0], printed[0]) and lines_match(shown[1:], printed[1:])


def json_matches(shown: Any, printed: Any, where: str = "") -> str | None:
    """None when `printed` holds `shown`, else where they differ."""
    if isinstance(shown, dict):
        if not isinstance(printed, dict):
            return f"{where or 'the answer'}: an object was shown, {type(printed).__name__} printed"
        for key, value in shown.items():
            if key not in printed:
                return f"{where}.{key}: shown, not printed"
            differs = json_matches(value, printed[key], f"{where}.{key}")
            if differs:
                return differs
        return None
    if isinstance(shown, list):
        if not isinstance(printed, list) or len(printed) != len(shown):
            return f"{where}: {json.dumps(shown, default=str)[:80]} shown, {_short(printed)} printed"
        for k, (s, p) in enumerate(zip(shown, printed, strict=True)):
            differs = json_matches(s, p, f"{where}[{k}]")
            if differs:
                return differs
        return None
    if isinstance(shown, Decimal | int) and not isinstance(shown, bool):
        numeric = isinstance(printed, Decimal | int) and not isinstance(printed, bool)
        if numeric and number_matches(str(shown), str(printed)):
            return None
        return f"{where}: {shown} shown, {_short(printed)} printed"
    return None if shown == printed else f"{where}: {shown!r} shown, {_short(printed)} printed"


def _short(value: Any) -> str:
    return json.dumps(value, default=str)[:80]


def output_differs(outputs: list[tuple[str, str]], printed: str) -> str | None:
    """None when what an example printed is what the README shows, else the first difference."""
    decoder = json.JSONDecoder(parse_float=Decimal)
    at = 0
    for lang, shown in outputs:
        if lang == "json":
            docs, k = [], 0
            while shown[k:].strip():
                k += len(shown[k:]) - len(shown[k:].lstrip())
                doc, k = decoder.raw_decode(shown, k)
                docs.append(doc)
            for doc in docs:
                at += len(printed[at:]) - len(printed[at:].lstrip())
                try:
                    got, at = decoder.raw_decode(printed, at)
                except json.JSONDecodeError:
                    return f"JSON shown, but printed: {printed[at : at + 200]!r}"
                differs = json_matches(doc, got)
                if differs:
                    return differs
        else:  # lines: as many as shown, or all the rest where a line `...` stands for any
            wanted = shown.rstrip("\n").split("\n")
            at += len(printed[at:]) - len(printed[at:].lstrip("\n"))
            rest = printed[at:].rstrip("\n").split("\n") if printed[at:].strip() else []
            if all(line.strip() != "..." for line in wanted):
                rest = rest[: len(wanted)]
            if not lines_match(wanted, rest):
                return "shown:\n" + "\n".join(wanted) + "\nprinted:\n" + "\n".join(rest)
            at += sum(len(line) + 1 for line in rest)
    if printed[at:].strip():
        return f"printed but not shown: {printed[at : at + 300]!r}"
    return None
