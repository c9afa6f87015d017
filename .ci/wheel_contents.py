"""Check the built wheel and sdist carry what the service reads at run time.

    python .ci/wheel_contents.py WHEEL SDIST

The wheel: both packages' py.typed (the SDK is typed for its users' mypy) and every file of
the playground as the checkout has it (its page, script modules and styles, in folders too);
the sdist: the same, and the README the metadata points at.
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def needed() -> set[str]:
    playground = ROOT / "service" / "pages" / "playground"
    files = {
        path.relative_to(ROOT).as_posix()
        for path in playground.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    return files | {"service/py.typed", "client/py.typed"}


def main() -> None:
    wheel, sdist = sys.argv[1:3]
    want = needed()
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(want - in_wheel)
    assert not missing, f"the wheel lacks {missing}"
    with tarfile.open(sdist) as tar:
        in_sdist = {name.partition("/")[2] for name in tar.getnames()}
    missing = sorted((want | {"README.md", "pyproject.toml"}) - in_sdist)
    assert not missing, f"the sdist lacks {missing}"
    print(f"wheel: {len(want)} files the service reads at run time are in the wheel and the sdist")


if __name__ == "__main__":
    main()
