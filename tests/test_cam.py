import gc
import weakref

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import nested_sequential, tiny_base

from kvis.attribution.cam import grad_cam, grad_cam_plus_plus, guided_grad_cam, score_cam
from kvis.attribution.gradients import guided_backprop
from kvis.core.anatomy import last_conv_layer
from kvis.core.demo import demo_images
from kvis.core.errors import KvisError
from kvis.core.models import configure_model
from kvis.core.runner import rows_within

TOLERANCE = dict(rtol=1e-5, atol=1e-6)
UPSAMPLINGS = {"bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}


def gap_model():
    """12x12 RGB -> conv(5) relu -> GAP -> dense(4) softmax: the CAM architecture of Zhou 2016."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(5, 3, activation="relu", name="conv",
                            kernel_initializer=keras.initializers.GlorotUniform(seed=3))(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(4, activation="softmax", name="predictions",
                                 kernel_initializer=keras.initializers.GlorotUniform(seed=4),
                                 bias_initializer=keras.initializers.RandomNormal(seed=5))(x)
    return keras.Model(inputs, outputs, name="gap_model")


def nested_softmax():
    """Sequential([input, base, GAP, dense(5) softmax]) around the functional `tiny_base`."""
    return keras.Sequential([keras.Input((16, 16, 3)), tiny_base(),
                             keras.layers.GlobalAveragePooling2D(name="gap"),
                             keras.layers.Dense(5, activation="softmax", name="head")])


def zhou_cam(activations, dense, classes):
    """CAM (Zhou et al. 2016): sum_k w_kc A_k, averaged like the global pooling."""
    weights = dense.kernel.numpy()[:, classes].T  # (N, K)
    height, width = activations.shape[1:3]
    return np.einsum("nijk,nk->nij", activations, weights) / (height * width)


def activations_and_gradients(model, layer, x, classes, score="logit"):
    """A and d score_c / d A by GradientTape on a plain Keras sub-model (compiled, not eager).

    The logit is computed from the final Dense layer's input; the probability is the model's
    own (softmax) output."""
    dense = model.layers[-1]
    sub = keras.Model(model.input, [model.get_layer(layer).output, dense.input, model.output])

    @tf.function
    def run(images):
        with tf.GradientTape() as tape:
            activations, features, probabilities = sub(images, training=False)
            scores = (tf.matmul(features, dense.kernel) + dense.bias if score == "logit"
                      else probabilities)
            total = tf.reduce_sum(tf.gather(scores, classes, axis=1, batch_dims=1))
        return activations, tape.gradient(total, activations)

    activations, gradients = run(tf.constant(x))
    return activations.numpy(), gradients.numpy()


def plus_plus_cam(activations, gradients):
    """Grad-CAM++ in NumPy, looping over images and channels (Chattopadhay et al. 2018, eq. 19)."""
    raw = np.zeros(activations.shape[:3], np.float64)
    for n in range(activations.shape[0]):
        for k in range(activations.shape[-1]):
            a, g = activations[n, ..., k].astype(np.float64), gradients[n, ..., k]
            denominator = 2 * g ** 2 + a.sum() * g ** 3
            alpha = np.zeros_like(a)
            nonzero = denominator != 0
            alpha[nonzero] = g[nonzero] ** 2 / denominator[nonzero]
            raw[n] += (alpha * np.maximum(g, 0)).sum() * a
    return raw


def brute_force_score_cam(scores_of, activations, pixels, classes, preprocess,
                          interpolation=cv2.INTER_LINEAR, channels=None):
    """Score-CAM one masked image at a time: the mask multiplies the pixels, which are then
    preprocessed; `scores_of(x)` gives the class scores (C,) of one model input (1, H, W, C).
    `channels` (one list per image) weighs only those channels; the others weigh 0."""
    raw = np.zeros(activations.shape[:3])
    for n in range(len(pixels)):
        for k in range(activations.shape[-1]) if channels is None else channels[n]:
            mask = cv2.resize(activations[n, ..., k], pixels.shape[1:3][::-1],
                              interpolation=interpolation)
            span = mask.max() - mask.min()
            mask = (mask - mask.min()) / span if span > 0 else np.zeros_like(mask)
            raw[n] += scores_of(preprocess(pixels[n:n + 1] * mask[None, ..., None]))[
                classes[n]] * activations[n, ..., k]
    return raw


def softmax(values):
    values = np.exp(values - values.max())
    return values / values.sum()


def test_grad_cam_on_a_gap_model_is_zhou_cam_and_follows_weight_changes(images):
    model = gap_model()
    x = images[:, :12, :12]
    conv = keras.Model(model.input, model.get_layer("conv").output)(x).numpy()
    dense = model.get_layer("predictions")
    result = grad_cam(model, x, classes=[1, 3], progress=False)
    assert result.layer == "conv" and result.classes.tolist() == [1, 3]
    assert result.method == "grad-cam" and result.values is None and result.score == "logit"
    assert result.raw.dtype == np.float32 and result.raw.shape == (2, 10, 10)
    expected = zhou_cam(conv, dense, [1, 3])
    assert expected.min() < 0 < expected.max()  # raw is before the ReLU
    np.testing.assert_allclose(result.raw, expected, **TOLERANCE)
    logits = conv.mean(axis=(1, 2)) @ dense.kernel.numpy() + dense.bias.numpy()
    np.testing.assert_allclose(result.scores, logits[[0, 1], [1, 3]], **TOLERANCE)
    dense.kernel.assign(-2.0 * dense.kernel)  # the compiled function is cached: new weights?
    np.testing.assert_allclose(grad_cam(model, x, classes=[1, 3]).raw,
                               zhou_cam(conv, dense, [1, 3]), **TOLERANCE)


def test_grad_cam_explains_the_top_prediction_and_matches_an_independent_tape(tiny, images):
    top = tiny(images).numpy().argmax(axis=1)
    assert grad_cam(tiny, images).classes.tolist() == top.tolist()
    activations, gradients = activations_and_gradients(tiny, "conv1", images, [2, 2])
    assert np.ptp(gradients[0, ..., 0]) > 0  # through max pooling: not a plain CAM
    result = grad_cam(tiny, images, classes=2, layer="conv1")
    expected = np.einsum("nijk,nk->nij", activations, gradients.mean(axis=(1, 2)))
    np.testing.assert_allclose(result.raw, expected, **TOLERANCE)
    one_by_one = grad_cam(tiny, images, classes=2, layer="conv1", batch_size=1)
    np.testing.assert_allclose(one_by_one.raw, result.raw, **TOLERANCE)


def test_probability_scores_follow_a_tape_of_the_softmax_output(tiny, images):
    activations, gradients = activations_and_gradients(tiny, "conv2", images, [0, 2],
                                                       score="probability")
    result = grad_cam(tiny, images, classes=[0, 2], score="probability")
    assert result.score == "probability"
    expected = np.einsum("nijk,nk->nij", activations, gradients.mean(axis=(1, 2)))
    np.testing.assert_allclose(result.raw, expected, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(result.scores, tiny(images).numpy()[[0, 1], [0, 2]], **TOLERANCE)
    logit = grad_cam(tiny, images, classes=[0, 2])
    assert not np.allclose(logit.raw, result.raw)
    plus = grad_cam_plus_plus(tiny, images, classes=[0, 2], score="probability")
    np.testing.assert_allclose(plus.raw, plus_plus_cam(activations, gradients),
                               rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("case", ["gap", "tiny"])
def test_grad_cam_plus_plus_matches_the_formula_in_numpy(case, tiny, images):
    model, layer, x = ((gap_model(), "conv", images[:, :12, :12]) if case == "gap"
                       else (tiny, "conv1", images))
    activations, gradients = activations_and_gradients(model, layer, x, [0, 2])
    result = grad_cam_plus_plus(model, x, classes=[0, 2], layer=layer)
    assert result.method == "grad-cam++"
    np.testing.assert_allclose(result.raw, plus_plus_cam(activations, gradients), **TOLERANCE)


@pytest.mark.parametrize("build, classes, score", [
    ("tiny", None, "probability"), ("tiny", [1, 0], "logit"),
    ("nested", [4, 1], "logit"), ("nested", None, "probability")])
def test_score_cam_matches_a_brute_force_loop(build, classes, score, tiny, images):
    if build == "tiny":  # a softmax head: its probabilities are the output
        model, layer = tiny, "conv2"
        activations = keras.Model(tiny.input, tiny.get_layer("conv2").output)(images).numpy()
        features = keras.Model(tiny.input, tiny.get_layer("gap").output)
        dense = tiny.get_layer("predictions")

        def logits(x):
            return (features(x).numpy() @ dense.kernel.numpy() + dense.bias.numpy())[0]
    else:  # a nested base model and a head without softmax (raw logits)
        model, layer = nested_sequential(tiny_base()), "base/conv2"
        activations = model.get_layer("base")(images).numpy()

        def logits(x):
            return model(x).numpy()[0]
    configure_model(model, preprocessing="none")  # the masks multiply the input itself
    expected_classes = model(images).numpy().argmax(axis=1) if classes is None else classes
    result = score_cam(model, images, classes=classes, score=score, batch_size=5)
    assert result.layer == layer and result.classes.tolist() == list(expected_classes)
    scores_of = logits if score == "logit" else lambda x: softmax(logits(x))
    expected = brute_force_score_cam(scores_of, activations, images, expected_classes,
                                     lambda pixels: pixels)
    np.testing.assert_allclose(result.raw, expected, **TOLERANCE)
    np.testing.assert_allclose(score_cam(model, images, classes=classes, score=score,
                                         batch_size=64).raw, result.raw, **TOLERANCE)


def dead_and_constant_channels(model):
    """`model` (tiny_cnn) with conv2's channel 0 zero everywhere and channel 1 constant 0.5:
    the first adds nothing, the second masks with zeros (a black image) and still counts."""
    kernel, bias = (w.numpy() for w in model.get_layer("conv2").weights)
    kernel[..., :2], bias[:2] = 0.0, (-1.0, 0.5)
    model.get_layer("conv2").set_weights([kernel, bias])
    return model


@pytest.mark.parametrize("batch_size, memory_mb, upsampling", [
    (1, 1024, "bilinear"), (7, 1024, "nearest"), (32, 0.03, "bilinear"), (64, 1024, "bilinear")])
def test_score_cam_at_any_batch_size_or_budget_is_the_brute_force_loop(batch_size, memory_mb,
                                                                       upsampling, tiny, images):
    model = configure_model(dead_and_constant_channels(tiny), preprocessing="tf")
    if memory_mb < 1:  # the budget cuts the batch to a few rows
        assert 1 < rows_within(model, memory_mb, batch_size=batch_size) < 8
    x = np.concatenate([images, images[:, ::-1]])
    activations = keras.Model(model.input, model.get_layer("conv2").output)(x).numpy()
    assert np.all(activations[..., 0] == 0) and np.all(activations[..., 1] == 0.5)
    result = score_cam(model, x, classes=[0, 1, 2, 0], upsampling=upsampling,
                       batch_size=batch_size, memory_mb=memory_mb, progress=False)
    features = keras.Model(model.input, model.get_layer("gap").output)
    dense = model.get_layer("predictions")
    expected = brute_force_score_cam(
        lambda v: (features(v).numpy() @ dense.kernel.numpy() + dense.bias.numpy())[0],
        activations, (x + 1.0) * 127.5, [0, 1, 2, 0], lambda p: p / 127.5 - 1.0,
        interpolation=UPSAMPLINGS[upsampling])
    np.testing.assert_allclose(result.raw, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("count", [1, 3, 5, 8, 20])
def test_count_weighs_exactly_the_channels_of_largest_variance(count, images):
    model = configure_model(nested_sequential(tiny_base()), preprocessing="none")
    x = np.concatenate([images, -images])
    activations = model.get_layer("base")(x).numpy()
    variances = activations.reshape(len(x), -1, 8).var(axis=1)
    chosen = [sorted(range(8), key=lambda k: -v[k])[:count] for v in variances]
    assert len({tuple(sorted(c)) for c in chosen}) > 1 or count in (1, 8, 20)  # per image
    result = score_cam(model, x, classes=[4, 1, 0, 2], count=count, batch_size=3,
                       progress=False)
    expected = brute_force_score_cam(lambda v: model(v).numpy()[0], activations, x,
                                     [4, 1, 0, 2], lambda p: p, channels=chosen)
    np.testing.assert_allclose(result.raw, expected, **TOLERANCE)
    if count >= 8:  # every channel: the full Score-CAM
        np.testing.assert_allclose(result.raw, score_cam(model, x, classes=[4, 1, 0, 2],
                                                         progress=False).raw, **TOLERANCE)


def test_score_cam_masks_the_pixels_not_the_model_input(tiny, images):
    configure_model(tiny, preprocessing="tf")  # input in [-1, 1]: a black pixel is -1
    activations = keras.Model(tiny.input, tiny.get_layer("conv2").output)(images).numpy()
    result = score_cam(tiny, images, classes=[0, 1], score="probability")
    pixels = (images + 1.0) * 127.5
    expected = brute_force_score_cam(lambda x: tiny(x).numpy()[0], activations, pixels, [0, 1],
                                     lambda p: p / 127.5 - 1.0)
    np.testing.assert_allclose(result.raw, expected, rtol=1e-4, atol=1e-6)
    masking_input = brute_force_score_cam(lambda x: tiny(x).numpy()[0], activations, images,
                                          [0, 1], lambda x: x)
    assert not np.allclose(result.raw, masking_input, rtol=1e-3)


def test_nested_base_model_layer_is_the_default_and_gives_zhou_cam(images):
    model = nested_softmax()
    assert last_conv_layer(model) == "base/conv2"
    result = grad_cam(model, images)
    assert result.layer == "base/conv2"
    np.testing.assert_allclose(grad_cam(model, images, layer="base/conv2").raw, result.raw,
                               **TOLERANCE)
    conv2 = model.get_layer("base")(images).numpy()
    np.testing.assert_allclose(result.raw, zhou_cam(conv2, model.get_layer("head"),
                                                    result.classes), **TOLERANCE)
    assert result.classes.tolist() == model(images).numpy().argmax(axis=1).tolist()


@pytest.mark.parametrize("upsampling, interpolation", [("bilinear", cv2.INTER_LINEAR),
                                                       ("nearest", cv2.INTER_NEAREST)])
def test_maps_are_the_rectified_upsampled_raw_map_scaled_to_one(images, upsampling,
                                                                  interpolation):
    model = gap_model()
    dense = model.get_layer("predictions")
    kernel = dense.kernel.numpy()
    kernel[:, 0] = -np.abs(kernel[:, 0])  # class 0: only negative weights on relu maps
    dense.kernel.assign(kernel)
    x = np.concatenate([images[:, :12, :12], images[:, 4:, 4:]])
    result = grad_cam(model, x, classes=[0, 1, 2, 3], upsampling=upsampling)
    assert result.maps.shape == (4, 12, 12) and result.maps.dtype == np.float32
    assert result.raw[0].max() <= 0 and np.all(result.maps[0] == 0)  # nothing positive
    for raw, heat in zip(result.raw[1:], result.maps[1:]):
        assert raw.max() > 0 and heat.max() == 1.0 and heat.min() >= 0
        upsampled = cv2.resize(np.maximum(raw, 0), (12, 12), interpolation=interpolation)
        np.testing.assert_allclose(heat, upsampled / upsampled.max(), rtol=1e-6, atol=1e-7)


def test_guided_grad_cam_is_guided_backprop_times_the_normalized_grad_cam(demo):
    pixels, _ = demo_images()
    x = pixels[::100][:3].astype(np.float32) / 255.0
    result = guided_grad_cam(demo, x, score="probability", upsampling="nearest")
    coarse = grad_cam(demo, x, score="probability", upsampling="nearest")
    fine = guided_backprop(demo, x, classes=coarse.classes, score="probability")
    assert result.method == "guided-grad-cam" and result.layer == "block3_conv1"
    np.testing.assert_allclose(result.values, fine.values * coarse.maps[..., None], rtol=1e-6)
    np.testing.assert_allclose(result.raw, coarse.raw)
    magnitude = np.abs(result.values).max(axis=-1)
    np.testing.assert_allclose(result.maps, magnitude / magnitude.max(axis=(1, 2))[:, None, None],
                               rtol=1e-6)


def test_class_names_resolve_on_the_demo_model(demo):
    pixels, labels = demo_images()
    x = pixels[:3].astype(np.float32) / 255.0
    by_name = grad_cam(demo, x, classes="ankle boot")
    by_index = grad_cam(demo, x, classes=9)
    assert by_name.layer == "block3_conv1" and by_name.classes.tolist() == [9, 9, 9]
    assert by_name.class_labels == ["ankle boot"] * 3
    np.testing.assert_allclose(by_name.raw, by_index.raw, **TOLERANCE)
    np.testing.assert_array_equal(by_name.pixels, pixels[:3])  # mapped back from the input
    assert grad_cam(demo, x).classes.tolist() == demo(x).numpy().argmax(axis=1).tolist()
    with pytest.raises(KvisError, match="unknown class 'ankle bot'.*closest: ankle boot"):
        grad_cam(demo, x, classes="ankle bot")


def test_bad_input_is_refused_with_one_line(tiny, images):
    with pytest.raises(KvisError, match="no layer 'conv3' in model 'tiny'; closest: conv"):
        grad_cam(tiny, images, layer="conv3")
    with pytest.raises(KvisError, match=r"grad-cam needs a spatial layer; 'gap'"):
        grad_cam(tiny, images, layer="gap")
    with pytest.raises(KvisError, match=r"score-cam needs a spatial layer; 'predictions'"):
        score_cam(tiny, images, layer="predictions")
    with pytest.raises(KvisError, match=r"class index 3 is out of range \(0-2\)"):
        grad_cam_plus_plus(tiny, images, classes=3)
    with pytest.raises(KvisError, match="1 classes given for 2 images"):
        grad_cam(tiny, images, classes=[0])
    with pytest.raises(KvisError, match="does not know the class names of model 'tiny'"):
        grad_cam(tiny, images, classes="cat")
    with pytest.raises(KvisError, match="do not fit the model input"):
        grad_cam(tiny, images[:, :8])
    with pytest.raises(KvisError, match="unknown score 'softmax'; choose from logit"):
        grad_cam(tiny, images, score="softmax")
    with pytest.raises(KvisError, match="unknown upsampling 'cubic'; choose from bilinear"):
        grad_cam(tiny, images, upsampling="cubic")
    with pytest.raises(KvisError, match="batch_size must be at least 1; got 0"):
        grad_cam(tiny, images, batch_size=0)
    with pytest.raises(KvisError, match="cannot tell how model 'tiny' expects its pixels"):
        score_cam(tiny, images)  # the masks are defined on pixels
    configure_model(tiny, preprocessing="none")
    for count in (0, -2, 2.5, True, "3"):
        with pytest.raises(KvisError, match=r"^score-cam: count \(how many channels to weigh\) "
                                            r"must be a whole number, at least 1, or None; got "):
            score_cam(tiny, images, count=count)


def test_the_model_is_unchanged_and_not_kept_alive(images):
    model = configure_model(nested_softmax(), preprocessing="none")
    before = model(images).numpy()
    grad_cam(model, images)
    score_cam(model, images)
    np.testing.assert_array_equal(model(images).numpy(), before)
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None


def test_the_command_passes_count_to_score_cam_alone(tmp_path, demo):
    from click.testing import CliRunner

    from kvis.cli import main
    from kvis.core.images import load_image

    path = tmp_path / "boot.png"
    cv2.imwrite(str(path), demo_images()[0][0])
    run = CliRunner().invoke
    done = run(main, ["attention", "demo", str(path), "-m", "score-cam", "--count", "5",
                      "--save-maps", str(tmp_path / "m.npz"), "--out", str(tmp_path / "m.png")])
    assert done.exit_code == 0, done.output
    image = load_image(path, demo)
    expected = score_cam(demo, image, count=5, progress=False)
    np.testing.assert_allclose(np.load(tmp_path / "m.npz")["raw"], expected.raw, rtol=1e-5,
                               atol=1e-6)
    assert not np.allclose(expected.raw, score_cam(demo, image, progress=False).raw)
    for args, message in ((["-m", "grad-cam", "--count", "5"], "--count is for --method score-cam"),
                          (["-m", "score-cam", "--count", "0"], "0 is not in the range x>=1")):
        done = run(main, ["attention", "demo", str(path), *args, "--out", str(tmp_path / "x.png")])
        assert done.exit_code == 2 and message in done.output
