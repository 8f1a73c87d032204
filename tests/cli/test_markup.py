"""Dataset rows, ids, sources and triggers are attacker-controlled: the CLI prints them as
written, never as rich markup, emoji codes or terminal control sequences."""

from __future__ import annotations

from lorascan.data.samples import Sample, write_jsonl
from tests.conftest import make_samples

MARKUP = "[red]x[/red] [link=https://evil.example]click[/link] [bold]:warning:"


def split_folder(root, text=MARKUP, ident="[link=https://evil.example]id", source="[bold]src"):
    root.mkdir()
    train = [Sample(text, 1, source, ident), Sample("plain benign", 0, source, "[b]ok")] + make_samples(3, 3)
    write_jsonl(root / "train.jsonl", train)
    write_jsonl(root / "test.jsonl", make_samples(2, 2))
    return root


def test_data_show_prints_rows_ids_and_sources_literally(cli, tmp_path):
    folder = split_folder(tmp_path / "[red]data")
    folder_name = str(folder)
    result = cli("data", "show", folder, "--examples", "1")
    assert result.code == 0, result.err
    assert f"  [[link=https://evil.example]id] {MARKUP}" in result.out
    assert "  [[b]ok] plain benign" in result.out
    assert "│ [bold]src " in result.out                       # the source cell of the table
    assert result.out.startswith(f"{folder_name}: split folder {folder_name}\n")
    assert "⚠" not in result.out


def test_control_characters_are_shown_not_sent(cli, tmp_path):
    folder = split_folder(tmp_path / "d", text="evil \x1b[31mred\x1b[0m \x07bell\rover")
    result = cli("data", "show", folder, "--examples", "1")
    assert result.code == 0
    assert "\x1b" not in result.out and "\x07" not in result.out and "\r" not in result.out
    assert "evil \\x1b[31mred\\x1b[0m \\x07bell\\rover" in result.out


def test_poison_prints_the_trigger_and_out_literally(cli, tmp_path):
    folder = split_folder(tmp_path / "d")
    trigger = "[red]per RFC[/red] :warning: [link=https://evil.example]x"
    out = tmp_path / "[bold]out"
    result = cli("poison", "--dataset", folder, "--trigger", trigger, "--count", "2", "--out", out)
    assert result.code == 0, result.err
    assert f"wrote {out}: " in result.out
    assert f"trigger '{trigger}', seed 42" in result.out
    assert (out / "train.jsonl").read_text().count(f"{trigger}. ") == 2


def test_markup_in_an_error_message_is_printed_literally(cli, tmp_path):
    result = cli("data", "show", tmp_path / "[red]missing[/red].csv")
    assert result.code == 1
    assert f"data file not found: {tmp_path}/[red]missing[/red].csv" in result.err
