"""Losses: values against numpy, label 255 ignored, class weights, serialization."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_seg import losses

NUM_CLASSES = 4


def _data(seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, (2, 6, 5))
    labels[0, :2] = 255
    labels[1, -1, -2:] = 255
    logits = rng.normal(0, 2, (2, 6, 5, NUM_CLASSES)).astype("float32")
    return labels, logits


def _np_pixel_ce(labels, logits):
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    safe = np.where(labels == 255, 0, labels)
    return -np.take_along_axis(logp, safe[..., None], -1)[..., 0]


def test_cross_entropy_is_keras_sparse_ce_with_ignore_class():
    labels, logits = _data()
    ours = losses.CrossEntropy()(labels, logits)
    keras_ref = keras.losses.SparseCategoricalCrossentropy(ignore_class=255, from_logits=True)(
        labels, logits
    )
    valid = labels != 255
    np_ref = _np_pixel_ce(labels, logits)[valid].mean()
    np.testing.assert_allclose(float(ours), float(keras_ref), rtol=1e-5)
    np.testing.assert_allclose(float(ours), np_ref, rtol=1e-5)


@pytest.mark.parametrize("name", list(losses.LOSSES))
def test_ignored_pixels_do_not_matter(name):
    labels, logits = _data()
    loss = losses.LOSSES[name]()
    changed = logits.copy()
    changed[labels == 255] = 1e4 * np.sign(changed[labels == 255])
    np.testing.assert_allclose(float(loss(labels, logits)), float(loss(labels, changed)), rtol=1e-6)
    # A batch with nothing valid gives 0 (dice: 1 - smooth/smooth = 0), never NaN.
    assert float(loss(np.full_like(labels, 255), logits)) == pytest.approx(0.0, abs=1e-6)


def test_class_weighted_cross_entropy_is_the_weighted_mean():
    labels, logits = _data()
    weights = np.array([0.5, 1.0, 2.0, 4.0])
    valid = labels != 255
    pixel_w = weights[np.where(valid, labels, 0)] * valid
    expected = (_np_pixel_ce(labels, logits) * pixel_w).sum() / pixel_w.sum()
    got = losses.CrossEntropy(class_weights=weights)(labels, logits)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_focal_loss():
    labels, logits = _data()
    valid = labels != 255
    ce = _np_pixel_ce(labels, logits)
    np.testing.assert_allclose(
        float(losses.FocalLoss(gamma=0.0)(labels, logits)), ce[valid].mean(), rtol=1e-5
    )
    expected = ((1 - np.exp(-ce)) ** 2 * ce)[valid].mean()
    np.testing.assert_allclose(
        float(losses.FocalLoss(gamma=2.0)(labels, logits)), expected, rtol=1e-5
    )


def test_top_k_cross_entropy_keeps_the_hardest_pixels():
    labels, logits = _data()
    ce = _np_pixel_ce(labels, logits)[labels != 255]
    np.testing.assert_allclose(
        float(losses.TopKCrossEntropy(top_k=1.0)(labels, logits)), ce.mean(), rtol=1e-5
    )
    k = int(np.ceil(0.25 * ce.size))
    expected = np.sort(ce)[::-1][:k].mean()
    np.testing.assert_allclose(
        float(losses.TopKCrossEntropy(top_k=0.25)(labels, logits)), expected, rtol=1e-5
    )
    with pytest.raises(ValueError, match="top_k must be a fraction"):
        losses.TopKCrossEntropy(top_k=2)


def test_dice_loss():
    labels, logits = _data()
    valid = (labels != 255)[..., None]
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True) * valid
    onehot = np.eye(NUM_CLASSES)[np.where(labels == 255, 0, labels)] * valid
    inter = (probs * onehot).sum((0, 1, 2))
    total = probs.sum((0, 1, 2)) + onehot.sum((0, 1, 2))
    expected = 1 - ((2 * inter + 1) / (total + 1)).mean()
    np.testing.assert_allclose(float(losses.DiceLoss()(labels, logits)), expected, rtol=1e-5)
    # A perfect prediction has (almost) zero Dice loss.
    perfect = np.where(onehot > 0, 50.0, -50.0).astype("float32")
    assert float(losses.DiceLoss()(labels, perfect)) < 1e-3


def test_build_loss_weighted_sum_and_serialization(tmp_path):
    labels, logits = _data()
    loss = losses.build_loss(
        [{"name": "cross_entropy"}, {"name": "dice", "weight": 0.5}], class_weights=[1, 2, 3, 4]
    )
    assert isinstance(loss, losses.WeightedSum)
    expected = float(losses.CrossEntropy(class_weights=[1, 2, 3, 4])(labels, logits)) + 0.5 * float(
        losses.DiceLoss(class_weights=[1, 2, 3, 4])(labels, logits)
    )
    np.testing.assert_allclose(float(loss(labels, logits)), expected, rtol=1e-5)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    np.testing.assert_allclose(float(clone(labels, logits)), expected, rtol=1e-5)
    single = losses.build_loss([{"name": "focal", "options": {"gamma": 1.0}}])
    assert isinstance(single, losses.FocalLoss) and single.gamma == 1.0
    with pytest.raises(ValueError, match="Unknown loss 'lovasz'.*cross_entropy"):
        losses.build_loss([{"name": "lovasz"}])


def test_compiled_model_with_our_loss_reloads_without_custom_objects(tmp_path):
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(NUM_CLASSES, 1)(inputs))
    model.compile("sgd", loss=losses.build_loss([{"name": "top_k", "options": {"top_k": 0.5}}]))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.loss, losses.TopKCrossEntropy) and loaded.loss.top_k == 0.5


@pytest.mark.parametrize("name", list(losses.LOSSES))
def test_gradients_are_finite(name):
    labels, logits = _data()
    x = tf.Variable(logits)
    with tf.GradientTape() as tape:
        value = losses.LOSSES[name]()(labels, x)
    grad = tape.gradient(value, x).numpy()
    assert np.isfinite(grad).all()
    assert not grad[labels == 255].any(), "ignored pixels must get no gradient"


def test_median_frequency_weights_by_hand():
    # Image A (4 px): class 0 x3, class 1 x1. Image B (4 px): class 0 x2, class 2 x2, plus 255.
    masks = [np.array([[0, 0], [0, 1]]), np.array([[0, 2, 255], [0, 2, 255]])]
    class_pixels, image_pixels = losses.count_labels(masks, num_classes=4)
    np.testing.assert_array_equal(class_pixels, [5, 1, 2, 0])
    np.testing.assert_array_equal(image_pixels, [8, 4, 4, 0])
    # freq = [5/8, 1/4, 2/4]; median 0.5 -> weights [0.8, 2.0, 1.0]; unseen class -> 0.
    weights = losses.median_frequency_weights(class_pixels, image_pixels)
    np.testing.assert_allclose(weights, [0.8, 2.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="no labelled pixels"):
        losses.median_frequency_weights([0, 0], [0, 0])
