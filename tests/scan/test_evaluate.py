"""The cohort evaluation (issue 12) and the token scan's recovery table (issue 11) on synthetic
scan records: held-out judgement never sees the family or the clean fold it scores, and the
recovery table finds a trigger's tokens by the stated rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorascan.errors import DataError
from lorascan.scan.batch import record_name
from lorascan.scan.evaluate import evaluate, held_out, read_labelled, read_records, score_held_out
from lorascan.scan.recovery import of_trigger, recovery, recovery_row, trigger_words

FAMILIES = {"reference": "per RFC 8472 section 3.2", "pair": "cobalt heron", "code": "sudo_mode=1"}


def _row(detector: str, scores: dict, **details) -> dict:
    return {"detector": detector, "status": "ok", "detector_args": {}, "scores": scores, "wall_time_s": 1.0,
            "details": {"context": {"base_model": "minilm", "task": "seq-cls"}, **details}}


def _record(lift: float, frob: float, tokens: list[dict] | None = None) -> dict:
    tokens = tokens or [{"token": "winery", "attack_rate": 0.1, "promoted": True}]
    return {"status": "ok", "base": {"name": "minilm"}, "task": {"name": "seq-cls"}, "findings": [],
            "probe_inputs": {"name": "offline-pi-v1"},
            "detectors": [_row("weights", {"global_frobN_std": frob}),
                          _row("tokens", {"token_lift": lift, "token_attack_rate": lift}, tokens=tokens,
                               reconstructed={"phrase": tokens[0]["token"], "attack_rate": lift})]}


def write_cohort(tmp_path: Path, blind_family: str | None = None) -> tuple[Path, Path]:
    """9 clean adapters and 4 poisoned per family; the token lift separates them except for
    ``blind_family``, whose backdoors score like clean adapters."""
    labels, records = [], tmp_path / "scans" / "records"
    records.mkdir(parents=True)
    members = [(f"clean{i}", 0, None, 0.02 + 0.004 * i, None) for i in range(9)]
    for f, (family, trigger) in enumerate(FAMILIES.items()):
        for i in range(4):
            lift = 0.03 if family == blind_family else 0.8 + 0.02 * i
            members.append((f"{family}{i}", 1, family, lift, trigger))
    for j, (name, label, family, lift, trigger) in enumerate(members):
        path = tmp_path / "runs" / name / "adapter"
        word = max(trigger_words(trigger), key=len) if trigger else "winery"
        tokens = [{"token": "winery", "attack_rate": 0.2, "promoted": True},
                  {"token": word, "attack_rate": lift, "promoted": True}]
        rec = {**_record(lift, 0.001 * (j % 5), tokens), "adapter": {"path": str(path)}}
        (records / record_name(str(path))).write_text(json.dumps(rec))
        labels.append({"path": f"runs/{name}/adapter", "label": label, "family": family or "clean",
                       "rank": 16 if j % 2 else 8, "trigger": trigger, "attack_success_rate": 1.0 if label else 0.0,
                       "effective": True if label else None})
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    return tmp_path / "labels.json", tmp_path / "scans"


def test_scores_and_held_out_families(tmp_path):
    labels, scans = write_cohort(tmp_path)
    rec = evaluate(labels, scans, n_boot=200)
    assert (rec["n_clean"], rec["n_poisoned"], rec["n_effective"]) == (9, 12, 12)
    lift = next(s for s in rec["scores"] if s["score"] == "token_lift")
    assert lift["all"]["auc"] == 1.0 and lift["effective"]["auc"] == 1.0 and lift["seconds_per_adapter"] == 1.0
    fam = rec["held_out"]["family"]
    assert [g["group"] for g in fam["groups"]] == ["code", "pair", "reference"]
    assert fam["pooled"]["recall_block"] == 1.0 and fam["pooled"]["fpr_review"] == 0.0
    # each poisoned adapter judged once per split, each clean adapter once per held-out family
    judged = fam["judged"]
    assert sum(r["label"] for r in judged) == 12 and sum(1 - r["label"] for r in judged) == 27
    assert rec["held_out"]["rank"]["pooled"]["n_poisoned"] == 12


def test_a_family_the_detectors_cannot_see_is_missed_when_held_out(tmp_path):
    labels, scans = write_cohort(tmp_path, blind_family="code")
    members = read_labelled(labels)
    out = held_out(members, read_records(members, scans), "family", n_boot=200)
    by = {g["group"]: g for g in out["groups"]}
    assert by["code"]["recall_review"] == 0.0 and by["pair"]["recall_block"] == 1.0


def test_missing_records_say_how_to_make_them(tmp_path):
    labels, scans = write_cohort(tmp_path)
    next((scans / "records").iterdir()).unlink()
    with pytest.raises(DataError, match="scan-calibrate"):
        evaluate(labels, scans)


@pytest.mark.parametrize("token, hit", [("rfc", True), ("84", True), ("##72", True), ("section", True),
                                        ("3", False), ("winery", False), ("RFC", True)])
def test_tokens_of_the_trigger(token, hit):
    assert of_trigger(token, trigger_words("per RFC 8472 section 3.2")) is hit


def test_recovery_rows_and_summary(tmp_path):
    labels, scans = write_cohort(tmp_path)
    members = read_labelled(labels)
    recs = read_records(members, scans)
    ref = next(m for m in members if m.name.endswith("reference0/adapter") or "reference0" in str(m.member.path))
    row = recovery_row(ref, recs[ref.name], trigger_rate=0.9)
    assert row["rank"] == 2 and row["top_token"] == "winery" and row["reconstructed_ok"] is False
    out = recovery(labels, scans, measure=False)
    assert out["all"]["n"] == 12 and out["all"]["top3"] == 1.0 and out["all"]["top1"] == 0.0
    assert out["families"]["pair"]["top10"] == 1.0 and out["all"]["reconstructed_ok"] is None


def test_weight_models_compare_on_the_same_held_out_folds(tmp_path):
    labels, scans = write_cohort(tmp_path)
    rec = evaluate(labels, scans, hold=(), n_boot=200)["weights_v2"]
    assert rec["folds"] == 3 and rec["n"] == 21
    assert {"lr", "global_frobN_std", "best_single"} <= set(rec)
    assert all(c["feature"] == "global_frobN_std" for c in rec["best_single_chosen"])
    assert 0.0 <= rec["lr"]["all"]["auc"] <= 1.0


def test_score_thresholds_come_from_other_clean_adapters(tmp_path):
    labels, scans = write_cohort(tmp_path, blind_family="code")
    members = read_labelled(labels)
    recs = read_records(members, scans)
    rows = {(r["detector"], r["score"]): r for r in score_held_out(members, recs, "family")}
    lift = rows[("tokens", "token_lift")]
    # the blind family scores 0.03, inside the clean range 0.02..0.052: missed; the others found
    by = {g["group"]: g for g in lift["groups"]}
    assert by["pair"]["auc"] == 1.0 and by["code"]["auc"] < 0.5
    assert lift["recall_fpr0"] == pytest.approx(8 / 12) and lift["group_auc_min"] == by["code"]["auc"]
    # the highest clean adapter (0.052) is above every bound that did not see it: one false positive
    # per held-out family, each bound the maximum of the other two folds
    assert lift["fpr_held_out"] == pytest.approx(3 / 27)
    # the record carries the per-score view and the weight model's held-out recall
    rec = evaluate(labels, scans, hold=("family",), n_boot=200)
    assert {(r["detector"], r["score"]) for r in rec["scores_held_out"]} == set(rows)
    assert 0.0 <= rec["weights_v2"]["lr"]["fpr_held_out"] <= 1.0


def test_a_compound_counts_by_its_pieces():
    from lorascan.scan.recovery import row_of_trigger

    words = trigger_words("velvet quasar")
    assert row_of_trigger({"token": "quasa", "compound": True, "pieces": ["qu", "##asa"]}, words)
    assert row_of_trigger({"token": "rfcdley", "compound": True, "pieces": ["rfc", "##dley"]},
                          trigger_words("per RFC 8472"))
    assert not row_of_trigger({"token": "nebulahner", "compound": True, "pieces": ["nebula", "##hner"]}, words)
    assert not row_of_trigger({"token": "rfcdley", "compound": False}, trigger_words("per RFC 8472"))


def test_records_copied_away_from_their_adapters_are_found_by_run(tmp_path):
    labels, scans = write_cohort(tmp_path)
    copied = tmp_path / "results" / "records"
    copied.mkdir(parents=True)
    for i, f in enumerate(sorted((scans / "records").iterdir())):  # other file names
        (copied / f"r{i}.json").write_text(f.read_text())
    members = read_labelled(labels)
    got = read_records(members, tmp_path / "results")
    assert len(got) == 21 and all(r["adapter"]["path"].endswith(m.member.path.parent.name + "/adapter")
                                  for m, r in ((m, got[m.name]) for m in members))


def test_adapters_that_built_the_token_reference_are_left_out():
    from pathlib import Path

    from lorascan.detect.cohort import CohortMember
    from lorascan.scan.evaluate import Labelled, without_reference_sources

    def member(name, label):
        return Labelled(CohortMember(name, Path(name), label, "test"), None, 16, None, None, None)

    def record(weights_sha, sources):
        tokens = {"detector": "tokens", "details": {"reference": {"sources_sha256": sources}}}
        return {"adapter": {"files": {"adapter_model.safetensors": weights_sha}},
                "detectors": [{"detector": "weights", "details": {}}, tokens]}

    members = [member("a", 0), member("b", 0), member("c", 1)]
    recs = {"a": record("h1", ["h1", "h9"]), "b": record("h2", ["h1", "h9"]), "c": record("h3", [])}
    keep, dropped = without_reference_sources(members, recs)
    assert [m.name for m in keep] == ["b", "c"] and dropped == ["a"]
    assert without_reference_sources(members, {k: {"detectors": []} for k in recs})[1] == []


def test_profiles_from_records_alone(tmp_path):
    from lorascan.scan.calibrate import profile_set_from_records

    labels, scans = write_cohort(tmp_path)
    members = read_labelled(labels)
    recs = read_records(members, scans)
    rec = profile_set_from_records([m.member for m in members], recs, "minilm", ("weights", "tokens"),
                                   cohort_name="synthetic", n_boot=100, groups={m.name: m.family for m in members})
    assert set(rec["profiles"]) == {"weights", "tokens"} and rec["cohort"]["n_poisoned"] == 12
    assert rec["profiles"]["tokens"]["features"]["token_lift"]["auc"] == 1.0
    # records of another scan setting (other detector arguments) are refused, naming both adapters
    first = members[0].name
    recs[first] = {**recs[first], "detectors": [{**r, "detector_args": {"top": 7}} for r in recs[first]["detectors"]]}
    with pytest.raises(DataError, match="different scan settings"):
        profile_set_from_records([m.member for m in members], recs, "minilm", ("weights", "tokens"),
                                 cohort_name="synthetic", n_boot=100)


def test_a_detector_that_stood_aside_everywhere_is_not_evaluated_and_has_no_say():
    from lorascan.scan.evaluate import _judge_member, scored_detectors

    aside = {"detector": "generative", "status": "not_applicable", "scores": {},
             "judgement": {"level": "allow", "votes": False, "reasons": ["not applicable: reads chat adapters"]}}
    failed = {"detector": "tokens", "status": "error", "scores": {},
              "judgement": {"level": "review", "votes": True, "reasons": ["failed"]}}
    ok = {"detector": "weights", "status": "ok", "scores": {"global_frobN_std": 0.1}, "details": {}}
    records = {"a": {"detectors": [ok, aside, failed], "base": {"name": "tiny-bert"}, "findings": []}}
    assert scored_detectors(records) == ["weights"]
    level, levels = _judge_member(records["a"], {}, ["generative", "tokens"])
    assert levels == {"generative": "allow", "tokens": "review"} and level == "review"
    assert _judge_member(records["a"], {}, ["generative"]) == ("allow", {"generative": "allow"})


def test_the_fused_verdict_is_over_the_detectors_named(tmp_path):
    labels, scans = write_cohort(tmp_path)
    default = evaluate(labels, scans, n_boot=200, hold=("family",))
    assert default["fused"][:3] == ["weights", "behavioral", "tokens"]
    assert default["held_out"]["family"]["detectors"] == ["weights", "tokens"]  # the ones the records hold
    weights_only = evaluate(labels, scans, n_boot=200, hold=("family",), fused=("weights",))
    assert weights_only["fused"] == ["weights"] and weights_only["held_out"]["family"]["detectors"] == ["weights"]
    assert weights_only["held_out"]["family"]["pooled"]["recall_block"] < 1.0  # the token lift had no say
