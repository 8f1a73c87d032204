"""The entry point: --help of every command, --version, and click's own usage errors."""

from __future__ import annotations

import pytest

from lorascan import __version__
from tests.cli.helpers import assert_one_line_error


@pytest.mark.parametrize("argv, usage", [
    (["--help"], "Usage: lorascan [OPTIONS] COMMAND"),
    (["-h"], "Usage: lorascan [OPTIONS] COMMAND"),
    (["data", "--help"], "Usage: lorascan data [OPTIONS] COMMAND"),
    (["data", "list", "--help"], "Usage: lorascan data list [OPTIONS]"),
    (["data", "show", "--help"], "Usage: lorascan data show [OPTIONS] NAME"),
    (["poison", "--help"], "Usage: lorascan poison [OPTIONS]"),
    (["poison", "-h"], "Usage: lorascan poison [OPTIONS]"),
    (["demo", "--help"], "Usage: lorascan demo [OPTIONS]"),
])
def test_help_exits_0(cli, argv, usage):
    result = cli(*argv)
    assert result.code == 0 and result.err == ""
    assert result.out.startswith(usage)


def test_top_level_help_lists_the_commands(cli):
    out = cli("--help").out
    for name in ("data", "poison", "demo"):
        assert f"\n  {name} " in out


def test_poison_help_documents_the_recipe(cli):
    out = cli("poison", "--help").out
    assert 'f"{trigger}. {text}"' in out and "random.Random(seed)" in out
    for flag in ("--dataset", "--trigger", "--count", "--ratio", "--seed", "--placement", "--out", "--force",
                 "--text-col", "--label-col", "--label-map", "--hf-splits"):
        assert flag in out


def test_version(cli):
    result = cli("--version")
    assert result.code == 0 and result.out.strip() == f"lorascan, version {__version__}"


@pytest.mark.parametrize("argv, fragment", [
    (["no-such-command"], "No such command 'no-such-command'"),
    (["poison"], "Missing option '--dataset'"),
    (["data", "show"], "Missing argument 'NAME'"),
    (["data", "show", "x", "--examples", "many"], "'many' is not a valid integer"),
    (["poison", "--dataset", "x", "--trigger", "t", "--out", "o", "--placement", "middle"], "'middle' is not one of"),
])
def test_click_usage_errors_exit_2_on_one_line(cli, argv, fragment):
    assert_one_line_error(cli(*argv), 2, fragment)


def test_list_names_the_detectors_and_what_ships(cli):
    res = cli("list")
    assert res.code == 0, res.err
    assert "phrases        cost 350" in res.out and "tokens         cost 300" in res.out
    assert "clean reference adapters (the phrase search): minilm/seq-cls/clean-s44-r16" in res.out
    assert "minilm         behavioral, tokens, weights" in res.out
