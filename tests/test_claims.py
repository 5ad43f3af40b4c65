"""The book's checked claims: recorded per run, one line each, listed in the build's report."""

from __future__ import annotations

import pytest

from allnet_lib import claims


def test_check_records_prints_and_replaces(tmp_path, capsys):
    assert claims.check("leakage_cnn", True, "gap +0.12 over 3 seeds", runs_dir=tmp_path) is True
    assert "check 'leakage_cnn': holds" in capsys.readouterr().out
    claims.check("gradcam_on_cell", False, "resnet50 0.20 vs 0.21", runs_dir=tmp_path)
    claims.check("leakage_cnn", False, "gap -0.01", runs_dir=tmp_path)  # a chapter run again
    recorded = {c["name"]: c for c in claims.read_checks(tmp_path)}
    assert set(recorded) == {"leakage_cnn", "gradcam_on_cell"}
    assert recorded["leakage_cnn"]["holds"] is False and recorded["leakage_cnn"]["detail"] == "gap -0.01"
    text = claims.report(tmp_path)
    assert text.startswith("claims checked on this run: 0 of 2 hold")
    assert "DOES NOT HOLD] leakage_cnn: gap -0.01" in text
    assert "not run ] intervals_trusted" in text  # every listed claim appears, run or not


def test_unknown_claims_are_refused_and_none_means_not_checked(tmp_path):
    with pytest.raises(ValueError, match="unknown claim 'the model is great'"):
        claims.check("the model is great", True, "", runs_dir=tmp_path)
    assert claims.check("intervals_trusted", None, "no test part", runs_dir=tmp_path) is None
    assert "not checked" in claims.report(tmp_path)
    assert claims.report(tmp_path / "empty") == "no claims were checked in this run"
