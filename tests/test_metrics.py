"""Confusion-matrix metrics against a hand-computed example; 255 is never counted."""

import keras
import numpy as np
import pytest

from keras_seg import metrics

# 4 classes; class 3 never occurs (neither in labels nor predictions).
LABELS = np.array([[0, 0, 1, 1], [2, 2, 255, 0], [1, 255, 2, 0]])
PREDS = np.array([[0, 1, 1, 1], [2, 0, 0, 0], [2, 1, 2, 0]])
# cm[true, pred] over the 10 valid pixels, written out by hand:
#   true 0 (4 px): pred 0,1,0,0 -> [3, 1, 0, 0]
#   true 1 (3 px): pred 1,1,2   -> [0, 2, 1, 0]
#   true 2 (3 px): pred 2,0,2   -> [1, 0, 2, 0]
HAND_CM = np.array([[3, 1, 0, 0], [0, 2, 1, 0], [1, 0, 2, 0], [0, 0, 0, 0]])
# IoU = tp / (row + col - tp): class 0: 3/(4+4-3)=0.6, class 1: 2/(3+3-2)=0.5,
# class 2: 2/(3+3-2)=0.5, class 3: undefined (absent) -> mIoU over 3 classes.
HAND_IOU = [0.6, 0.5, 0.5, None]


def test_confusion_matrix_numpy_and_tf_match_the_hand_count():
    cm = metrics.ConfusionMatrix(4)
    cm.update(LABELS, PREDS)
    np.testing.assert_array_equal(cm.matrix, HAND_CM)
    np.testing.assert_array_equal(metrics.confusion_matrix(LABELS, PREDS, 4).numpy(), HAND_CM)


def test_metrics_from_the_hand_count():
    cm = metrics.ConfusionMatrix(4)
    cm.update(LABELS, PREDS)
    result = cm.result(["a", "b", "c", "d"])
    ious = [row["iou"] for row in result["per_class"]]
    assert ious[:3] == pytest.approx(HAND_IOU[:3]) and ious[3] is None
    assert result["miou"] == pytest.approx((0.6 + 0.5 + 0.5) / 3)
    assert result["pixel_accuracy"] == pytest.approx(7 / 10)
    assert result["mean_accuracy"] == pytest.approx((3 / 4 + 2 / 3 + 2 / 3) / 3)
    assert result["num_pixels"] == 10 and result["num_classes_present"] == 3
    assert [row["name"] for row in result["per_class"]] == ["a", "b", "c", "d"]


def test_a_class_only_predicted_counts_in_miou():
    cm = metrics.ConfusionMatrix(3)
    cm.update(np.array([0, 0, 1, 1]), np.array([0, 2, 1, 1]))
    result = cm.result()
    # Class 2 is never in the labels but is predicted once: IoU 0, and it counts.
    assert result["per_class"][2]["iou"] == 0.0
    assert result["miou"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert result["per_class"][2]["accuracy"] is None


def test_accumulates_over_batches_and_merges():
    a, b = metrics.ConfusionMatrix(4), metrics.ConfusionMatrix(4)
    a.update(LABELS[:2], PREDS[:2])
    b.update(LABELS[2:], PREDS[2:])
    a.merge(b)
    np.testing.assert_array_equal(a.matrix, HAND_CM)
    a.reset()
    assert not a.matrix.any()


def test_out_of_range_values_are_errors():
    cm = metrics.ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"outside 0\.\.2.*\[7\]"):
        cm.update(np.array([0, 7]), np.array([0, 1]))


def test_keras_mean_iou_on_logits_matches_and_ignores_255():
    logits = np.eye(4, dtype="float32")[PREDS] * 5.0  # argmax == PREDS
    metric = metrics.MeanIoU(4)
    metric.update_state(LABELS[:2], logits[:2])
    metric.update_state(LABELS[2:], logits[2:])
    assert float(metric.result()) == pytest.approx((0.6 + 0.5 + 0.5) / 3, rel=1e-5)
    clone = metrics.MeanIoU.from_config(metric.get_config())
    assert clone.ignore_class == 255 and clone.num_classes == 4 and clone.name == "mean_iou"


def test_keras_metric_in_compile_and_fit():
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(inputs))
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=[metrics.MeanIoU(3)])
    x = np.random.default_rng(0).uniform(0, 1, (4, 8, 8, 3)).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, (4, 8, 8))
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    cm = metrics.ConfusionMatrix(3)
    cm.update(y, model.predict(x, verbose=0).argmax(-1))
    assert logs["mean_iou"] == pytest.approx(cm.result()["miou"], rel=1e-5)


def test_format_table():
    cm = metrics.ConfusionMatrix(4)
    cm.update(LABELS, PREDS)
    text = metrics.format_table(cm.result(["road", "car", "sky", "bus"]), title="val")
    assert "road" in text and "60.00" in text and "mIoU 53.33" in text
    assert text.splitlines()[0] == "val"
    bus = next(line for line in text.splitlines() if line.startswith("bus"))
    assert "-" in bus  # undefined IoU shown as "-"
