import keras
import numpy as np
import pytest

from kvis.core.errors import KvisError
from kvis.training.constraints import FilterNormConstraint


def _rms(kernel):
    kernel = np.asarray(kernel, np.float64)
    return np.sqrt((kernel ** 2).reshape(-1, kernel.shape[-1]).mean(axis=0))


def test_large_filters_are_scaled_to_the_radius_and_small_ones_are_untouched():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)
    kernel[..., 0] *= 0.01  # RMS ~ 0.01: below
    kernel[..., 1] *= 0.05  # RMS ~ 0.05: below
    kernel[..., 2] *= 1.0  # RMS ~ 1: above
    kernel[..., 3] *= 3.0  # RMS ~ 3: above
    before = _rms(kernel)
    assert before[0] < 0.1 and before[1] < 0.1 and before[2] > 0.1 and before[3] > 0.1
    result = np.asarray(FilterNormConstraint(0.1)(kernel))
    after = _rms(result)
    np.testing.assert_array_equal(result[..., :2], kernel[..., :2])
    np.testing.assert_allclose(after[2:], 0.1, rtol=1e-6)
    # Scaled, not reshaped: the same direction as before (NumPy reference).
    expected = kernel[..., 2:] * (0.1 / before[2:])
    np.testing.assert_allclose(result[..., 2:], expected, rtol=1e-5, atol=1e-8)


def test_a_filter_exactly_at_the_radius_is_unchanged():
    kernel = np.full((2, 2, 1, 1), 0.5, np.float32)  # RMS 0.5
    np.testing.assert_array_equal(np.asarray(FilterNormConstraint(0.5)(kernel)), kernel)


def _tiny_constrained(radius=0.1):
    """A conv -> GAP -> dense model, the conv constrained (radius None: not), seeded."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 3))
    constraint = FilterNormConstraint(radius) if radius is not None else None
    x = keras.layers.Conv2D(5, 3, name="conv", kernel_initializer=keras.initializers.RandomNormal(
        stddev=0.03), kernel_constraint=constraint)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    return keras.Model(inputs, outputs)


@pytest.mark.slow
def test_after_a_training_step_no_filter_exceeds_the_radius():
    model = _tiny_constrained()
    conv = model.get_layer("conv")
    assert _rms(conv.kernel.numpy()).max() < 0.1  # all filters start inside the ball
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=50.0), loss="mse")
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (8, 8, 8, 3)).astype(np.float32)
    y = rng.normal(0, 10, (8, 2)).astype(np.float32)
    # The same step without the constraint: the big learning rate pushes filters past 0.1.
    free = _tiny_constrained(radius=None)
    np.testing.assert_array_equal(free.get_layer("conv").kernel.numpy(), conv.kernel.numpy())
    free.compile(optimizer=keras.optimizers.SGD(learning_rate=50.0), loss="mse")
    free.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    unconstrained = free.get_layer("conv").kernel.numpy()
    assert _rms(unconstrained).max() > 0.1
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    kernel = conv.kernel.numpy()
    assert _rms(kernel).max() <= 0.1 + 1e-6
    # Independent computation: the constrained kernel is the free step's kernel, renormalized.
    np.testing.assert_allclose(kernel, np.asarray(FilterNormConstraint(0.1)(unconstrained)),
                               rtol=1e-5, atol=1e-7)


def test_the_constraint_is_saved_with_the_model(tmp_path):
    model = _tiny_constrained(radius=0.25)
    path = tmp_path / "constrained.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    constraint = loaded.get_layer("conv").kernel_constraint
    assert isinstance(constraint, FilterNormConstraint)
    assert constraint.radius == 0.25
    assert constraint.get_config() == {"radius": 0.25}
    np.testing.assert_array_equal(loaded.get_layer("conv").kernel.numpy(),
                                  model.get_layer("conv").kernel.numpy())


@pytest.mark.parametrize("radius", [0, -0.1, float("nan"), "0.1", None, True])
def test_a_radius_that_is_not_positive_is_refused(radius):
    with pytest.raises(KvisError, match="radius"):
        FilterNormConstraint(radius)
