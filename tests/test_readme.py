"""The README is a test: every example runs against a live server and prints what it shows.

How blocks are marked and compared: tests/readme.py (and README's Development section).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import readme

README = readme.read()


def test_every_code_block_is_an_example_an_output_a_file_or_says_why_it_is_not_run() -> None:
    assert README.unmarked == [], (
        "README blocks at these lines have no marker (<!-- example: NAME -->, <!-- output: NAME -->, "
        "<!-- file: PATH --> or <!-- not-tested: REASON -->)"
    )
    assert README.problems == []
    assert README.examples, "no README example found: the markers' form changed?"


@pytest.mark.parametrize("path", sorted({path for path, _ in README.files}))
def test_a_file_shown_in_the_readme_is_the_one_in_the_repository(path: str) -> None:
    for shown_path, shown in README.files:
        if shown_path == path:
            assert (readme.ROOT / path).read_text() == shown, f"README shows {path} differently"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(README.examples))
def test_a_readme_example_prints_what_the_readme_shows(name: str, server_url: str, tmp_path: Path) -> None:
    example = README.examples[name]
    work = tmp_path / "examples"
    shutil.copytree(readme.EXAMPLES, work)
    env = {
        **os.environ,
        "GRADSERVE_URL": server_url,
        # the venv's gradserve-client, python3 and python first, as after `pip install`
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("GRADSERVE_API_KEY", None)
    if example.lang == "python":
        (work / "_example.py").write_text(example.code)
        command = [sys.executable, "_example.py"]
    else:
        if "curl " in example.code and shutil.which("curl") is None:
            pytest.skip("curl is not installed")
        command = ["bash", "-e", "-o", "pipefail", "-c", example.code.replace(readme.README_URL, server_url)]
    run = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, f"README line {example.line}: {name} failed:\n{run.stderr}"
    differs = readme.output_differs(example.outputs, run.stdout)
    assert differs is None, f"README line {example.line}: {name} prints other than shown: {differs}"


# ---------------------------------------------------------------- the comparison itself


def test_a_number_shown_rounded_matches_only_its_own_rounding() -> None:
    assert readme.number_matches("0.2326", "0.23258412")
    assert not readme.number_matches("0.2326", "0.2327001")
    assert readme.number_matches("2.020e-15", "2.0199e-15")
    assert not readme.number_matches("2.020e-15", "2.03e-15")
    assert readme.number_matches("0.005983050775329333", "0.005983050775329334")  # within 1e-9
    assert not readme.number_matches("0.005983050775329333", "0.005983060775329333")


def test_json_shown_may_leave_members_out_but_never_change_one() -> None:
    printed = '{"loss": 0.25, "units": {"x": {"z": [1.5]}, "o": {"z": [0.3]}}}\n'
    assert readme.output_differs([("json", '{"units": {"o": {"z": [0.3]}}}')], printed) is None
    assert readme.output_differs([("json", '{"units": {"o": {"z": [0.4]}}}')], printed) is not None
    assert readme.output_differs([("json", '{"units": {"o": {"z": [0.3, 1]}}}')], printed) is not None
    assert readme.output_differs([("json", '{"loss": 0.25}')], printed + "more\n") is not None


def test_lines_shown_match_with_ellipses_and_nothing_else() -> None:
    printed = 'event: progress\ndata: {"epoch":0}\n\nevent: progress\ndata: {"epoch":2}\n'
    assert readme.output_differs([("", 'event: progress\n...\ndata: {"epoch":2}\n')], printed) is None
    assert readme.output_differs([("", 'event: progress\ndata: {"epoch":...}\n...\n')], printed) is None
    assert readme.output_differs([("", 'event: progress\ndata: {"epoch":1}\n...\n')], printed) is not None
    assert readme.output_differs([("", "event: progress\n")], printed) is not None
