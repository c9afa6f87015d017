"""Without the new fields (wrt_inputs, huber_delta, the new losses) every answer is byte for
byte what it was: requests recorded with the code before them (tests/recorded/record.py, run
on that checkout), each answer's sha256 kept, posted again here to a live server."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx

RECORDED = Path(__file__).parent / "recorded" / "answers_before_hvp.json"


def test_answers_without_the_new_fields_are_byte_for_byte_the_recorded_ones(http: httpx.Client) -> None:
    recorded = json.loads(RECORDED.read_text())
    assert len(recorded["requests"]) >= 60
    changed = []
    for entry in recorded["requests"]:
        body = {**recorded["cases"][entry["case"]], **entry["options"]}
        r = http.post(entry["path"], json=body)
        if (r.status_code, hashlib.sha256(r.content).hexdigest()) != (entry["status"], entry["sha256"]):
            changed.append((entry["path"], entry["case"], entry["options"], r.status_code))
    assert not changed
