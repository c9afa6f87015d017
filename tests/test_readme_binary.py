"""The README's binary framing example, run as written: its Python frames the body, its curl
line posts it, and the answer is the chain's gradients."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from service.wire import framing
from tests import seed

README = Path(__file__).resolve().parent.parent / "README.md"


def example() -> tuple[str, str]:
    """The README's frame.py and the curl command after it."""
    text = README.read_text()
    found = re.search(r"```python\n(# frame\.py.*?)```\s*```sh\n(.*?)```", text, re.DOTALL)
    assert found, "the README's binary example (```python # frame.py ... then ```sh curl ...) is gone"
    return found.group(1), found.group(2)


def test_the_frame_script_writes_what_its_header_says(tmp_path: Path) -> None:
    script, _ = example()
    (tmp_path / "frame.py").write_text(script)
    run = subprocess.run(
        [sys.executable, "frame.py"], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 0, run.stderr
    body = (tmp_path / "body.bin").read_bytes()
    document, sections = framing.split(body, run.stdout.strip())
    refs = framing.references(json.loads(bytes(document)), len(sections))
    assert [ref.path for ref in refs] == [("samples", "inputs", "x")]
    assert framing.to_lists(sections, refs[0]) == [1.5]


def test_the_readme_curl_example_answers_the_chains_gradients(server_url: str, tmp_path: Path) -> None:
    script, command = example()
    (tmp_path / "frame.py").write_text(script)
    assert "http://127.0.0.1:8000/v1/gradients" in command
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (the frame script is tested above)")
    command = command.replace("http://127.0.0.1:8000", server_url).replace("python3 ", f"{sys.executable} ")
    run = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    expected = seed.chain().weight_gradients
    assert [w["value"] for w in answer["gradients"]["weights"]] == pytest.approx(expected, rel=1e-12)
    # the same request as JSON answers the same, to the last bit
    case = seed.chain()
    plain = httpx.post(server_url + "/v1/gradients", json={"network": case.network, "samples": case.samples})
    assert answer == plain.json()
