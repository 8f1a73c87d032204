"""The learned weight score (issue 12): fitted with scikit-learn, stored and scored as plain
JSON numbers, grouped by family in its cross-validation, and used by the verdict through the
profile."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lorascan.detect.calibrate import CohortScores, calibrate
from lorascan.detect.linear import LinearModel, fit_linear, group_folds, usable_features
from lorascan.detect.verdict import Profile, judge
from lorascan.errors import DataError


def cohort(seed: int = 0):
    """12 clean and 12 poisoned rows over 3 families: 'a' separates (log scale), 'b' is noise."""
    rng = np.random.default_rng(seed)
    rows, labels, groups = [], [], []
    for i in range(24):
        y = int(i >= 12)
        rows.append({"a": float(10 ** (-4 + y + 0.2 * rng.standard_normal())), "b": float(rng.standard_normal()),
                     "const": 1.0, "gap": None if i == 3 else 0.5})
        labels.append(y)
        groups.append(None if y == 0 else "fgh"[i % 3])
    return rows, labels, groups


def test_fit_scores_out_of_fold_and_round_trips():
    rows, labels, groups = cohort()
    model, oof = fit_linear("lr", rows, labels, groups)
    assert model.features == ("a", "b") and model.log == (True, False)  # const and gap are not usable
    assert model.C in (0.01, 0.1, 1.0, 10.0) and model.cv_auc == 1.0 and len(oof) == 24
    assert min(oof[12:]) > max(oof[:12])
    again = LinearModel.from_record(json.loads(json.dumps(model.to_record())))
    assert again == model
    assert again.score(rows[0]) == pytest.approx(model.score(rows[0]))
    assert model.score({"a": -1.0, "b": 0.0}) is None and model.score({"b": 0.0}) is None  # log of <= 0, missing


def test_folds_never_split_a_family():
    _, labels, groups = cohort()
    folds = group_folds(labels, groups)
    assert len(folds) == 3
    for test in folds:
        fams = {groups[i] for i in test if labels[i] == 1}
        assert len(fams) == 1 and any(labels[i] == 0 for i in test)
    assert sorted(np.concatenate(folds).tolist()) == list(range(24))


@pytest.mark.parametrize("change", [{"coef": [1.0]}, {"scale": [0.0, 1.0]}, {"intercept": math.inf},
                                    {"mean": ["x", 1.0]}, {"features": []}])
def test_malformed_models_are_refused(change):
    rows, labels, groups = cohort()
    rec = {**fit_linear("lr", rows, labels, groups)[0].to_record(), **change}
    with pytest.raises(DataError):
        LinearModel.from_record(rec)


def test_too_few_adapters_is_a_data_error():
    with pytest.raises(DataError, match="at least 2"):
        fit_linear("lr", [{"a": 1.0}, {"a": 2.0}, {"a": 3.0}], [0, 0, 1], [None, None, "f"])
    assert usable_features([{"a": 1.0}, {"a": 1.0}]) == []


def test_the_profile_carries_the_model_into_the_verdict():
    from dataclasses import replace

    rows, labels, groups = cohort()
    model, oof = fit_linear("lr", rows, labels, groups)
    scores = [{**r, "lr": v} for r, v in zip(rows, oof)]
    scores = [{k: v for k, v in s.items() if v is not None} for s in scores]
    prof = calibrate(CohortScores(tuple(f"m{i}" for i in range(24)), tuple(labels), tuple(scores)),
                     detector="weights", view="scan", base_model="minilm", decision=("lr",), direction="+", n_boot=200)
    prof = replace(prof, model=model)
    again = Profile.from_record(json.loads(json.dumps(prof.to_record())))
    assert again.model == model
    poisoned = {"a": 1e-3, "b": 0.0}
    clean = {"a": 1e-4, "b": 0.0}
    assert judge(poisoned, again, {"base_model": "minilm"}).level == "block"
    assert judge(clean, again, {"base_model": "minilm"}).level == "allow"
