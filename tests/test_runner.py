import numpy as np
import pytest
import tensorflow as tf

from kvis.core.errors import KvisError
from kvis.core.runner import compiled, run_batches


def test_batches_are_equal_sized_and_outputs_concatenated_in_order():
    sizes = []

    def step(x, k):
        sizes.append(int(x.shape[0]))
        return {"double": 2 * x, "plus": x + tf.cast(k, tf.float32)[:, None]}

    x = np.arange(14, dtype=np.float32).reshape(7, 2)
    out = run_batches(step, (x, np.arange(7)), batch_size=3, progress=False)
    assert sizes == [3, 3, 3]  # the last batch is padded, its padding dropped
    np.testing.assert_array_equal(out["double"], 2 * x)
    np.testing.assert_array_equal(out["plus"], x + np.arange(7)[:, None])
    with pytest.raises(KvisError, match="batch_size must be at least 1"):
        run_batches(step, (x, np.arange(7)), batch_size=0)


def test_compiled_passes_are_traced_once_per_model_and_key(tiny):
    builds = []

    def build():
        builds.append(1)
        return tf.function(lambda x: tiny(x), input_signature=[tf.TensorSpec((None, 16, 16, 3))])

    first = compiled(tiny, "forward", build)
    assert compiled(tiny, "forward", build) is first and len(builds) == 1
    assert compiled(tiny, "other", build) is not first and len(builds) == 2


def test_caches_do_not_keep_a_model_alive(images):
    import gc
    import weakref

    from conftest import tiny_cnn

    from kvis.attribution.cam import grad_cam
    from kvis.attribution.gradients import saliency

    model = tiny_cnn("short_lived")
    saliency(model, images, progress=False)
    grad_cam(model, images, progress=False)
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None
