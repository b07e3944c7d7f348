"""The check of a big upload runs in a process of its own (``kolo_cli.server.checkfile``) and answers like the
in-process one: problems named after the uploaded file, at most 1000 listed plus the count of the rest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.server]


def test_apart_check_names_the_upload_and_caps_the_list(tmp_path: Path) -> None:
    from kolo_cli.server.app import ApiError
    from kolo_cli.server.routes_datasets import _validate_apart

    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    f = tmp_path / "0123abcd.jsonl"
    f.write_text(json.dumps(good) + "\n" + "not json\n" * 1005)
    with pytest.raises(ApiError) as e:
        _validate_apart(f, "mine.jsonl")
    assert e.value.status_code == 422 and "1005 problem(s)" in e.value.detail
    assert len(e.value.problems) == 1001 and e.value.problems[-1] == "... and 5 more"
    assert e.value.problems[0].startswith("mine.jsonl:2: ")
    f.write_text("".join(json.dumps({**good, "id": i}) + "\n" for i in range(3)))
    ok = _validate_apart(f, "mine.jsonl")
    assert ok["rows"] == 3 and ok["format"] == "messages" and ok["stats"]["rows"] == 3
