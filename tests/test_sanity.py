import numpy as np
import pytest

from kvis.attention_maps import method_functions
from kvis.demo import demo_images
from kvis.errors import KvisError
from kvis.models import preprocessing_for, resolve_classes
from kvis.sanity import cascading_randomization, plot_sanity_check, rank_correlation


def test_rank_correlation_against_known_cases():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    assert rank_correlation(a, a * 10 + 3) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    assert rank_correlation(a, np.zeros(4)) == 0.0
    # ties share their average rank: ranks (1.5, 1.5, 3, 4) against (1, 2, 3, 4)
    assert rank_correlation([1, 1, 2, 3], a) == pytest.approx(np.corrcoef([1.5, 1.5, 3, 4],
                                                                          [1, 2, 3, 4])[0, 1])


def test_faithful_maps_change_and_model_free_maps_do_not(demo):
    images, _ = demo_images()
    x = preprocessing_for(demo)(images[::100][:3])
    weights = [w.copy() for w in demo.get_weights()]
    classes = resolve_classes(demo, x)
    methods = method_functions(["saliency", "gradcam"], classes=classes)
    methods["edges"] = lambda model, x: np.abs(np.diff(x[..., 0], axis=1, prepend=0))
    result = cascading_randomization(demo, x, methods, progress=False)
    assert result.layers == ["predictions", "fc1", "block3_conv1", "block2_conv2",
                             "block2_conv1", "block1_conv2", "block1_conv1"]
    by_method = dict(zip(result.methods, result.correlations))
    assert by_method["saliency"][-1] < 0.5 and by_method["gradcam"][-1] < 0.5
    np.testing.assert_allclose(by_method["edges"], 1.0)
    for old, new in zip(weights, demo.get_weights()):
        np.testing.assert_array_equal(old, new)  # the model got its weights back
    figure = plot_sanity_check(result)
    np.testing.assert_allclose(figure.axes[0].lines[0].get_ydata(), by_method["saliency"])


def test_checkpoints_and_bad_layers(demo):
    images, _ = demo_images()
    x = preprocessing_for(demo)(images[:1])
    methods = method_functions(["saliency"], classes=[0])
    result = cascading_randomization(demo, x, methods, layers=["block2_conv1", "fc1"],
                                     progress=False)
    assert result.layers == ["fc1", "block2_conv1"] and result.correlations.shape == (1, 2)
    with pytest.raises(KvisError, match="'block1_pool' has no kernel to randomize"):
        cascading_randomization(demo, x, methods, layers=["block1_pool"], progress=False)
