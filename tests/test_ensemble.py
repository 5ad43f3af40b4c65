"""ensemble: soft/hard voting over records, alignment checks, the 8 poses, test-time augmentation."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pandas as pd
import pytest

from allnet_lib import ensemble, evaluate


def _images_frame(n=40, n_subjects=8, seed=0):
    rng = np.random.default_rng(seed)
    subjects = [f"{i}" if i % 2 else f"H{i}" for i in range(n_subjects)]
    subj = np.array([subjects[i % n_subjects] for i in range(n)])
    y = np.array([0 if s.startswith("H") else 1 for s in subj])
    return pd.DataFrame({"filename": [f"UID_{s}_{i}_1_{'all' if t else 'hem'}.bmp"
                                      for i, (s, t) in enumerate(zip(subj, y))],
                         "subject": subj, "y": y}), rng


def _record(name, frame, p, manifest="abc"):
    return ensemble.record_from_predictions(name, frame, p, manifest_hash=manifest, n_bootstrap=50)


def test_soft_and_hard_vote_by_hand():
    p = pd.DataFrame({"a": [0.9, 0.2, 0.6], "b": [0.7, 0.4, 0.1], "c": [0.2, 0.3, 0.45]})
    np.testing.assert_allclose(ensemble.soft_vote(p), p.mean(axis=1))
    np.testing.assert_allclose(ensemble.hard_vote(p), [2 / 3, 0, 1 / 3])
    np.testing.assert_allclose(ensemble.soft_vote(p, {"a": 1, "b": 1}), [0.8, 0.3, 0.35])
    with pytest.raises(ValueError, match="unknown members"):
        ensemble.soft_vote(p, {"z": 1})
    with pytest.raises(ValueError, match="non-negative"):
        ensemble.soft_vote(p, [0, 0, 0])


def test_ensemble_from_records_matches_manual_metrics():
    frame, rng = _images_frame()
    y = frame["y"].to_numpy()
    ps = {m: np.clip(y * 0.6 + rng.normal(0.2, 0.3, len(y)), 0, 1) for m in ("m1", "m2", "m3")}
    recs = [_record(m, frame, p) for m, p in ps.items()]
    # shuffle one member's rows: alignment is by file name
    shuffled = dict(recs[2])
    order = rng.permutation(len(frame))
    shuffled["predictions"] = {k: [v[i] for i in order] for k, v in recs[2]["predictions"].items()}
    rec = ensemble.ensemble_from_records([recs[0], recs[1], shuffled], n_bootstrap=50)
    evaluate.validate_record(rec)
    mean = (ps["m1"] + ps["m2"] + ps["m3"]) / 3
    np.testing.assert_allclose(rec["predictions"]["p_all"], mean)
    manual = evaluate.metrics_from_predictions(y, mean, subjects=frame["subject"], n_bootstrap=0)
    assert rec["metrics"]["accuracy"] == pytest.approx(manual["accuracy"])
    assert rec["metrics"]["roc_auc"] == pytest.approx(manual["roc_auc"])
    assert rec["ensemble"]["members"] == ["m1", "m2", "m3"]
    assert rec["manifest_hash"] == "abc"
    assert rec["metrics"]["ci"]["intervals"]["accuracy"] is not None
    hard = ensemble.ensemble_from_records(recs, rule="hard", n_bootstrap=0)
    votes = np.mean([p >= 0.5 for p in ps.values()], axis=0)
    np.testing.assert_allclose(hard["predictions"]["p_all"], votes)


def test_records_must_cover_the_same_images():
    frame, rng = _images_frame()
    a = _record("a", frame, rng.uniform(size=len(frame)))
    b = _record("b", frame.iloc[:-1], rng.uniform(size=len(frame) - 1))
    with pytest.raises(ValueError, match="missing"):
        ensemble.ensemble_from_records([a, b])
    c = _record("c", frame, rng.uniform(size=len(frame)), manifest="other")
    with pytest.raises(ValueError, match="different images"):
        ensemble.ensemble_from_records([a, c])
    with pytest.raises(ValueError, match="at least 2"):
        ensemble.ensemble_from_records([a])


def test_records_round_trip_through_files(tmp_path):
    frame, rng = _images_frame()
    paths = []
    for m in ("x", "y"):
        paths.append(evaluate.save_record(_record(m, frame, rng.uniform(size=len(frame))),
                                          tmp_path / f"{m}.json"))
    rec = ensemble.ensemble_from_records(paths, n_bootstrap=0)
    assert rec["ensemble"]["members"] == ["x", "y"]


def test_d4_transforms_are_the_eight_distinct_poses():
    img = np.arange(4 * 4 * 3).reshape(4, 4, 3)
    outs = {ensemble.d4_transform(img, n).tobytes() for n in ensemble.D4_TRANSFORMS}
    assert len(outs) == 8
    batch = np.stack([img, img + 1])
    for n in ensemble.D4_TRANSFORMS:
        np.testing.assert_array_equal(ensemble.d4_transform(batch, n)[1],
                                      ensemble.d4_transform(img + 1, n))
    np.testing.assert_array_equal(ensemble.d4_transform(img, "rot90"), np.rot90(img))
    np.testing.assert_array_equal(ensemble.d4_transform(img, "flip_lr"), img[:, ::-1])
    # the same poses, under the same names, as the training augmentation
    from allnet_lib import augment

    assert ensemble.D4_TRANSFORMS == augment.ORIENTATIONS
    for n in ensemble.D4_TRANSFORMS:
        assert augment.identify_orientation(img, ensemble.d4_transform(img, n)) == n
    with pytest.raises(ValueError):
        ensemble.d4_transform(img, "rot45")


def _tiny_model(invariant: bool, size=16):
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((size, size, 3))
    if invariant:  # pointwise conv + global pooling: the same answer in every pose
        x = keras.layers.Conv2D(4, 1, activation="relu")(inp)
        x = keras.layers.GlobalAveragePooling2D()(x)
    else:
        x = keras.layers.Flatten()(inp)
    out = keras.layers.Dense(2, activation="softmax")(x)
    return keras.Model(inp, out, name="tiny_inv" if invariant else "tiny_flat")


def test_tta_predict_shapes_and_invariance():
    x = np.random.default_rng(0).uniform(size=(5, 16, 16, 3)).astype("float32")
    inv = ensemble.tta_predict(_tiny_model(True), x)
    assert inv.shape == (8, 5)
    np.testing.assert_allclose(inv, np.broadcast_to(inv[0], inv.shape), atol=1e-5)
    flat = ensemble.tta_predict(_tiny_model(False), x, transforms=["identity", "rot90"])
    assert flat.shape == (2, 5)
    assert not np.allclose(flat[0], flat[1])
    with pytest.raises(ValueError, match="not square"):
        ensemble.tta_predict(_tiny_model(False), x[:, :, :8], transforms=["rot90"])


def test_tta_evaluate_on_image_files(tmp_path):
    pytest.importorskip("allnet_lib.pipeline")
    from PIL import Image

    rng = np.random.default_rng(1)
    rows = []
    for i in range(12):
        label = "all" if i % 3 else "hem"
        subject = f"{i % 4 + 1}" if label == "all" else f"H{i % 2 + 1}"
        name = f"UID_{subject}_{i}_1_{label}.bmp"
        path = tmp_path / name
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
        rows.append({"path": str(path), "filename": name, "label": label,
                     "y": int(label == "all"), "subject": subject, "fold": "fold_0",
                     "image": i, "cell": 1})
    table = pd.DataFrame(rows)
    rec = ensemble.tta_evaluate(_tiny_model(False), table, image_size=16, crop=36,
                                n_bootstrap=20, progress=False)
    evaluate.validate_record(rec)
    assert rec["n_images"] == 12 and rec["name"] == "tiny_flat + TTA"
    assert set(rec["tta"]["per_transform"]) == set(ensemble.D4_TRANSFORMS)
    assert 0 <= rec["tta"]["changed_decisions"] <= 1


def test_paired_difference():
    frame, rng = _images_frame(n=80, n_subjects=10)
    y = frame["y"].to_numpy()
    good = np.where(y == 1, 0.8, 0.2)
    worse = good.copy()
    worse[:20] = 1 - worse[:20]  # 20 cells flipped to wrong answers
    a, b = _record("worse", frame, worse), _record("good", frame, good)
    res = ensemble.paired_difference(a, b, n_bootstrap=500)
    assert res["a_value"] == pytest.approx(60 / 80) and res["b_value"] == pytest.approx(1.0)
    assert res["difference"] == pytest.approx(20 / 80)
    assert 0 < res["ci"][0] <= res["difference"] <= res["ci"][1]
    assert res["share_b_better"] == 1.0 and res["n_subjects"] == 10
    same = ensemble.paired_difference(a, a, n_bootstrap=100)
    assert same["difference"] == 0 and same["ci"] == [0.0, 0.0]
    wf1 = ensemble.paired_difference(a, b, metric="weighted_f1", n_bootstrap=50)
    manual = evaluate.metrics_from_predictions(y, worse, n_bootstrap=0)["weighted_f1"]
    assert wf1["a_value"] == pytest.approx(manual)
    with pytest.raises(ValueError):
        ensemble.paired_difference(a, b, metric="roc_auc")
