"""Names are data: refused when they could escape the data root, inert argv elements otherwise."""

from __future__ import annotations

import shlex

import pytest

from kolo_trainer import names, spec
from kolo_trainer.errors import NameError_, OptionsError
from kolo_trainer.options import TrainOptions


@pytest.mark.parametrize("bad, why", [
    ("../x", "'..'"), ("data/../../etc/passwd", "'..'"), ("/etc/passwd", "absolute"), ("C:\\x", "absolute"),
    ("a\nb", "control"), ("a\x00b", "control"), ("", "empty"), ("   ", "empty"),
])
def test_check_relative_refuses(bad, why):
    with pytest.raises(ValueError, match=why):
        names.check_relative(bad)


@pytest.mark.parametrize("ok", ["data/chats.jsonl", "it's a test", "semi;colon", "space name", 'dq"x', "ünï"])
def test_inert_names_allowed(ok):
    names.check_relative(ok)


def test_check_plain_is_one_folder():
    names.check_plain("run-1")
    with pytest.raises(ValueError, match="single folder"):
        names.check_plain("a/b")


def test_data_root_resolve_refuses_symlink_escape(tmp_path):
    from kolo_trainer.runfolder import DataRoot

    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    (root / "data" / "link").symlink_to(tmp_path)
    assert DataRoot(root).resolve("data/x.jsonl") == root.resolve() / "data" / "x.jsonl"
    with pytest.raises(NameError_, match="outside the data root"):
        DataRoot(root).resolve("data/link/secret")
    with pytest.raises(NameError_, match="'..'"):
        DataRoot(root).resolve("../x")


@pytest.mark.parametrize("name", ["it's a test", "a; rm -rf ~", "$(id) `id`", 'say "hi"'])
def test_quote_space_semicolon_names_travel_as_one_argument(name):
    _, explicit = spec.merge(TrainOptions, {}, {"output_dir": name})
    argv = spec.to_argv(TrainOptions, explicit)
    assert argv == [f"--output-dir={name}"]
    assert shlex.split(shlex.join(argv)) == argv  # what --dry-run prints reads back as the same argv


def test_output_dir_with_newline_or_dots_refused():
    with pytest.raises(OptionsError) as e:
        spec.merge(TrainOptions, {}, {"output_dir": "a\nb", "train_data": "../../x"})
    assert any("--output-dir" in p and "control" in p for p in e.value.problems)
    assert any("--train-data" in p and "'..'" in p for p in e.value.problems)
