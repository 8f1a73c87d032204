"""``lorascan weights`` and ``lorascan weights-calibrate`` end to end, in-process."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from tests.cli.helpers import assert_one_line_error
from tests.conftest import tree
from tests.detect.adapters import make_adapter, naive_module


def test_weights_json_record(cli, tmp_path):
    truth = make_adapter(tmp_path / "ad", layers=3)
    res = cli("weights", tmp_path / "ad", "--json", tmp_path / "out.json")
    assert res.code == 0, res.err
    rec = json.loads((tmp_path / "out.json").read_text())
    assert rec["schema_version"] == 1 and rec["kind"] == "weight_scan" and rec["status"] == "ok"
    frob = [naive_module(a, b)["frobN"] for a, b in truth.values()]
    assert rec["features"]["global_frobN_std"] == pytest.approx(float(np.std(frob)), rel=1e-6)
    assert rec["unanalysed"] == [] and "modules" not in rec
    assert rec["verdict"]["label"] == "uncalibrated" and rec["detector"] == "weights"
    assert "global_frobN_std" in res.out and "UNCALIBRATED" in res.out


def test_weights_modules_flag(cli, tmp_path):
    make_adapter(tmp_path / "ad")
    res = cli("weights", tmp_path / "ad", "--json", tmp_path / "o.json", "--modules")
    assert res.code == 0, res.err
    mods = json.loads((tmp_path / "o.json").read_text())["modules"]
    assert len(mods) == 6
    first = mods[0]
    for key in ("name", "layer", "projection", "rank", "frobN", "singular_values", "spectral_entropy",
                "participation_ratio", "ab_asymmetry", "sv_max_mean"):
        assert key in first
    assert (first["layer"], first["projection"], first["rank"], len(first["singular_values"])) == (0, "q_proj", 4, 4)
    assert "model.layers.1.mlp.down_proj" in res.out


def test_json_to_dev_null_and_stdout(cli, tmp_path):
    make_adapter(tmp_path / "ad")
    assert cli("weights", tmp_path / "ad", "--json", os.devnull).code == 0
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    res = cli("weights", tmp_path / "ad", "--json", "-")
    assert res.code == 0 and json.loads(res.out)["status"] == "ok"


def _corrupt(tmp_path, case):
    ad = tmp_path / "ad"
    make_adapter(ad)
    st = ad / "adapter_model.safetensors"
    data = st.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    first = next(k for k in header if k != "__metadata__")

    def rewrite(h):
        blob = json.dumps(h).encode()
        st.write_bytes(len(blob).to_bytes(8, "little") + blob + data[8 + n:])

    if case == "truncated":
        st.write_bytes(data[:700])
    elif case == "header length":
        st.write_bytes((len(data) * 2).to_bytes(8, "little") + data[8:])
    elif case == "invalid json":
        st.write_bytes(n.to_bytes(8, "little") + b"[" + data[9:])
    elif case == "unknown dtype":
        header[first]["dtype"] = "Q7"
        rewrite(header)
    elif case == "out of range":  # the last tensor moved 4 bytes past the end of the data
        last = max(header, key=lambda k: header[k]["data_offsets"][1])
        header[last]["data_offsets"] = [o + 4 for o in header[last]["data_offsets"]]
        rewrite(header)
    elif case == "overlap":  # a tensor moved 4 bytes back into the one before it
        second = next(k for k in header if header[k]["data_offsets"][0] == header[first]["data_offsets"][1])
        header[second]["data_offsets"] = [o - 4 for o in header[second]["data_offsets"]]
        rewrite(header)
    elif case == "shape mismatch":
        make_adapter(ad, extra={"m.layers.0.x_proj.lora_A.weight": ("F32", np.ones((4, 8), "<f4")),
                                "m.layers.0.x_proj.lora_B.weight": ("F32", np.ones((8, 2), "<f4"))})
    elif case == "rank":
        (ad / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 16, "lora_alpha": 16}))
    elif case == "no config":
        (ad / "adapter_config.json").unlink()
    elif case == "only bin":
        st.unlink()
        (ad / "adapter_model.bin").write_bytes(b"\x80\x04\x95cos\nsystem\n")
    return ad


BAD = {"truncated": "truncated", "header length": "beyond the file size", "invalid json": "not valid JSON",
       "unknown dtype": "unknown dtype", "out of range": "bad offsets", "overlap": "overlap",
       "shape mismatch": "A/B shape mismatch", "rank": "differs from the config", "no config": "adapter_config.json",
       "only bin": "never unpickled"}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_one_line_exit_1_and_error_record(cli, tmp_path, case):
    ad = _corrupt(tmp_path, case)
    before = tree(ad)
    out = tmp_path / "rec.json"
    res = cli("weights", ad, "--json", out)
    assert_one_line_error(res, 1, BAD[case])
    rec = json.loads(out.read_text())
    assert rec["status"] == "error" and BAD[case] in rec["error"] and rec["exit_code"] == 1
    assert rec["verdict"] is None and rec["features"] == {}
    assert tree(ad) == before  # the scan wrote nothing beside the adapter
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ad", "rec.json"]  # no temporary files left


def test_missing_adapter_and_usage_errors(cli, tmp_path):
    assert_one_line_error(cli("weights", tmp_path / "nope"), 1, "adapter not found")
    make_adapter(tmp_path / "ad")
    assert_one_line_error(cli("weights", tmp_path / "ad", "--scaling", "x"), 2)
    (tmp_path / "p.json").write_text("{}")
    assert_one_line_error(cli("weights", tmp_path / "ad", "--profile", tmp_path / "p.json"), 1, "not a valid profile")


def test_attacker_strings_are_escaped(cli, tmp_path):
    evil = "[bold red]PWNED[/bold red]\x1b[2J"
    make_adapter(tmp_path / "ad", extra={evil: ("F32", np.ones(2, "<f4"))},
                 config={"base_model_name_or_path": "[link=http://x]m[/link]"})
    res = cli("weights", tmp_path / "ad")
    assert res.code == 0, res.err
    assert "[bold red]PWNED[/bold red]" in res.out and "\x1b" not in res.out
    assert "[link=http://x]m[/link]" in res.out


def _cohort(root, n=3):
    for i in range(2 * n):
        poisoned = i >= n
        ad = root / f"ad{i}"
        make_adapter(ad, seed=i, layers=2, scale_b=0.01, spike=(1, "down_proj") if poisoned else None,
                     config={"base_model_name_or_path": "org/m"})
        (ad / "lorascan.json").write_text(json.dumps({"poison": {"count": 25 if poisoned else 0, "trigger": "t"}}))
    return root


def test_calibrate_then_scan_with_profile(cli, tmp_path):
    root = _cohort(tmp_path / "cohort")
    prof = tmp_path / "profile.json"
    res = cli("weights-calibrate", root, "--out", prof, "--bootstrap", "100", "--plot", tmp_path / "roc.png")
    assert res.code == 0, res.err
    rec = json.loads(prof.read_text())
    assert rec["decision"] == ["global_frobN_std"] and rec["features"]["global_frobN_std"]["auc"] == 1.0
    assert rec["n_clean"] == 3 and [c["name"] for c in rec["cohort"]] == [f"ad{i}" for i in range(6)]
    assert (tmp_path / "roc.png").stat().st_size > 1000
    assert "global_frobN_std *" in res.out
    out = tmp_path / "v.json"
    assert cli("weights", root / "ad4", "--profile", prof, "--json", out).code == 0
    assert json.loads(out.read_text())["verdict"]["label"] == "suspicious"
    assert cli("weights", root / "ad0", "--profile", prof, "--json", out).code == 0
    v = json.loads(out.read_text())["verdict"]
    assert v["label"] == "clean" and v["profile"] == "weights:weights@org/m"
    fresh = tmp_path / "fresh"
    make_adapter(fresh, seed=9, spike=(0, "q_proj"), config={"base_model_name_or_path": "other/model"})
    assert cli("weights", fresh, "--profile", prof, "--json", out).code == 0
    assert json.loads(out.read_text())["verdict"]["label"] == "uncalibrated"
    assert_one_line_error(cli("weights-calibrate", root, "--out", prof), 2, "exists")


def test_calibrate_from_labels_file_and_best_feature(cli, tmp_path):
    root = _cohort(tmp_path / "cohort")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n" + "".join(f"cohort/ad{i},{int(i >= 3)}\n" for i in range(6)))
    prof = tmp_path / "p.json"
    res = cli("weights-calibrate", labels, "--out", prof, "--feature", "best", "--bootstrap", "50")
    assert res.code == 0, res.err
    rec = json.loads(prof.read_text())
    best = max(rec["features"].values(), key=lambda f: f["auc"])["auc"]
    assert rec["features"][rec["decision"][0]]["auc"] == best
    (root / "ad0" / "lorascan.json").unlink()
    assert_one_line_error(cli("weights-calibrate", root, "--out", tmp_path / "q.json"), 1, "manifest not found")
    assert not (tmp_path / "q.json").exists()


@pytest.mark.parametrize("argv,flags", [
    (["weights", "--help"], ("ADAPTER_DIR", "--profile", "--json", "--modules", "--scaling")),
    (["weights-calibrate", "--help"], ("COHORT", "--out", "--feature", "--bootstrap", "--seed", "--plot", "--force")),
])
def test_help(cli, argv, flags):
    res = cli(*argv)
    assert res.code == 0 and res.err == ""
    assert all(f in res.out for f in flags)
