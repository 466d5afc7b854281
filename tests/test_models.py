import warnings

import keras
import numpy as np
import pytest
from conftest import nested_sequential, tiny_base

from kvis.core.demo import CLASS_NAMES, demo_images
from kvis.core.errors import KvisError
from kvis.core.models import (
    class_index,
    class_label,
    class_names,
    configure_model,
    folder_class_names,
    imagenet_class_names,
    load_model,
    model_label,
    preprocessing_for,
    read_labels,
)


def test_demo_model_classifies_its_shipped_images(demo):
    images, labels = demo_images()
    assert images.dtype == np.uint8 and images.shape[1:] == (28, 28, 1)
    assert set(labels.tolist()) == set(range(10))
    predictions = demo.predict(preprocessing_for(demo)(images), verbose=0).argmax(axis=1)
    assert np.mean(predictions == labels) >= 0.9
    assert class_names(demo) == list(CLASS_NAMES)


def test_model_files_load_including_legacy_h5(tmp_path, images):
    model = nested_sequential(tiny_base())
    for name in ("m.keras", "m.h5"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras warns that .h5 is a legacy format
            model.save(tmp_path / name)
        loaded = load_model(tmp_path / name)
        np.testing.assert_allclose(loaded(images), model(images), rtol=1e-5, atol=1e-6)


def test_bad_model_files_give_one_clear_error(tmp_path):
    with pytest.raises(KvisError, match="model file not found: .*vgg17.*vgg16, resnet50"):
        load_model("vgg17")
    (tmp_path / "model.txt").write_text("x")
    with pytest.raises(KvisError, match="must end in .keras"):
        load_model(tmp_path / "model.txt")
    (tmp_path / "broken.keras").write_text("not a zip")
    with pytest.raises(KvisError, match="broken.keras is not a Keras model file"):
        load_model(tmp_path / "broken.keras")
    import zipfile

    with zipfile.ZipFile(tmp_path / "other.keras", "w") as archive:
        archive.writestr("readme.txt", "a zip, but no model in it")
    with pytest.raises(KvisError, match="could not load model"):
        load_model(tmp_path / "other.keras")


def test_imagenet_weights_without_network_or_cache(monkeypatch):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example: None -- [Errno -3] no network")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(KvisError, match=r"not in the Keras cache .*--weights none"):
        load_model("vgg16", weights="imagenet")
    with pytest.raises(KvisError, match="weights file not found"):
        load_model("resnet50", weights="nowhere.weights.h5")


def test_class_names_given_once_work_everywhere(tmp_path):
    model = nested_sequential(tiny_base())
    assert class_names(model) is None and class_label(model, 3) == "#3"
    configure_model(model, class_names=["bart", "homer", "lisa", "marge", "maggie"])
    assert class_label(model, 3) == "marge" and class_index(model, "lisa") == 2
    with pytest.raises(KvisError, match=r"unknown class 'homr'.*closest: homer"):
        class_index(model, "homr")
    with pytest.raises(KvisError, match="3 class names given for model .* with 5 outputs"):
        configure_model(model, class_names=["a", "b", "c"])


@pytest.mark.parametrize("given", [-1, "-1", " -1", 5, "5"])
def test_a_class_index_out_of_range_is_said_the_same_way_below_and_above(given):
    model = nested_sequential(tiny_base())
    configure_model(model, class_names=["bart", "homer", "lisa", "marge", "maggie"])
    with pytest.raises(KvisError, match=rf"^class index {str(given).strip()} is out of range "
                                        r"\(0-4\)$"):
        class_index(model, given)


def test_a_labels_file_beside_the_model_file_is_found(tmp_path):
    model = nested_sequential(tiny_base())
    model.save(tmp_path / "simpsons.keras")
    (tmp_path / "simpsons.labels.txt").write_text("bart\nhomer\n\nlisa\nmarge\nmaggie\n")
    assert class_names(load_model(tmp_path / "simpsons.keras")) == [
        "bart", "homer", "lisa", "marge", "maggie"]
    (tmp_path / "other.json").write_text('{"1": "b", "0": "a", "2": "c", "3": "d", "4": "e"}')
    given = load_model(tmp_path / "simpsons.keras", class_names=tmp_path / "other.json")
    assert class_names(given) == ["a", "b", "c", "d", "e"]


def test_labels_files_and_dataset_folders_give_names_in_keras_order(tmp_path):
    (tmp_path / "list.json").write_text('["cat", "dog"]')
    (tmp_path / "index.json").write_text('{"0": ["n01", "tench"], "1": ["n02", "goldfish"]}')
    assert read_labels(tmp_path / "list.json") == ["cat", "dog"]
    assert read_labels(tmp_path / "index.json") == ["tench", "goldfish"]
    (tmp_path / "bad.json").write_text('{"1": "b"}')
    with pytest.raises(KvisError, match="expected a JSON list"):
        read_labels(tmp_path / "bad.json")
    with pytest.raises(KvisError, match="labels file not found"):
        read_labels(tmp_path / "missing.txt")
    for name in ("sad", "Happy", "angry", "10_neutral", "2_fear"):
        (tmp_path / "faces" / name).mkdir(parents=True)
    (tmp_path / "faces" / "readme.txt").write_text("not a class")
    # image_dataset_from_directory labels the sorted subfolder names 0, 1, ...
    assert folder_class_names(tmp_path / "faces") == [
        "10_neutral", "2_fear", "Happy", "angry", "sad"]


def test_imagenet_class_names_ship_with_kvis():
    names = imagenet_class_names()
    assert len(names) == 1000 and len(set(names)) == 998  # crane and maillot appear twice
    assert (names[0], names[281], names[999]) == ("tench", "tabby", "toilet_tissue")


@pytest.mark.integration
def test_applications_load_with_random_or_file_weights(tmp_path):
    model = load_model("resnet50", weights=None)
    assert model.name == "resnet50" and model.output_shape == (None, 1000)
    assert class_names(model)[1] == "goldfish"
    assert class_label(model, 1) == "goldfish (random weights)"
    assert model_label(model) == "resnet50 (random weights)"
    model.save_weights(tmp_path / "r.weights.h5")
    again = load_model("resnet50", weights=str(tmp_path / "r.weights.h5"))
    assert (class_label(again, 1), model_label(again)) == ("goldfish", "resnet50")
    np.testing.assert_array_equal(again.get_layer("conv1_conv").kernel,
                                  model.get_layer("conv1_conv").kernel)
    x = np.zeros((1, 224, 224, 3), np.float32)
    assert keras.ops.convert_to_numpy(again(x)).shape == (1, 1000)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_file_that_is_not_a_model_is_named_so(tmp_path, suffix):
    from kvis.core.models import load_model

    path = tmp_path / f"notes{suffix}"
    path.write_text("not a model")
    with pytest.raises(KvisError, match=rf"notes\{suffix} is not a Keras model file"):
        load_model(str(path))


def test_an_h5_model_file_still_loads(tmp_path):
    from conftest import tiny_cnn

    from kvis.core.models import load_model

    model = tiny_cnn()
    path = tmp_path / "tiny.h5"
    model.save(path)
    loaded = load_model(str(path), preprocessing="unit")
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]


# (constructor, its module's preprocess_input, the smallest input it builds at, family kvis names)
APPLICATION_FAMILIES = {
    "VGG16": ("vgg16", 32, "VGG"), "VGG19": ("vgg19", 32, "VGG"),
    "ResNet50": ("resnet", 32, "ResNet"), "ResNet101": ("resnet", 32, "ResNet"),
    "ResNet152": ("resnet", 32, "ResNet"), "ResNet50V2": ("resnet_v2", 32, "ResNetV2"),
    "ResNet101V2": ("resnet_v2", 32, "ResNetV2"), "ResNet152V2": ("resnet_v2", 32, "ResNetV2"),
    "InceptionV3": ("inception_v3", 75, "InceptionV3"),
    "InceptionResNetV2": ("inception_resnet_v2", 75, "InceptionResNetV2"),
    "Xception": ("xception", 71, "Xception"), "MobileNet": ("mobilenet", 32, "MobileNet"),
    "MobileNetV2": ("mobilenet_v2", 32, "MobileNetV2"),
    "MobileNetV3Small": ("mobilenet_v3", 32, None), "MobileNetV3Large": ("mobilenet_v3", 32, None),
    "DenseNet121": ("densenet", 32, "DenseNet"), "NASNetMobile": ("nasnet", 32, "NASNet"),
    "EfficientNetB0": ("efficientnet", 32, None), "EfficientNetV2B0": ("efficientnet_v2", 32, None),
    "ConvNeXtTiny": ("convnext", 32, None),
}


@pytest.mark.integration
@pytest.mark.parametrize("name", list(APPLICATION_FAMILIES))
def test_every_application_is_preprocessed_as_its_own_preprocess_input(name):
    from kvis.core.architectures import RESCALES_ITSELF, recognise
    from kvis.core.graph import model_graph

    module, size, family = APPLICATION_FAMILIES[name]
    model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3),
                                              classes=10)
    finetuned = keras.Sequential([keras.Input((size, size, 3)), model,
                                  keras.layers.Dense(2, name="head")])
    pixels = np.random.default_rng(0).integers(0, 256, (2, 5, 5, 3)).astype(np.uint8)
    expected = getattr(keras.applications, module).preprocess_input(pixels.astype(np.float32))
    for net in (model, finetuned):  # alone, and nested as the base of a fine-tuned model
        found = recognise(model_graph(net))
        assert (found.name if found is not RESCALES_ITSELF else None) == family
        np.testing.assert_allclose(preprocessing_for(net)(pixels), expected, rtol=1e-6,
                                   atol=1e-5)


@pytest.mark.integration
@pytest.mark.parametrize("name", ["MobileNetV2", "VGG16"])
def test_a_model_that_calls_preprocess_input_itself_takes_raw_pixels(name):
    module = {"MobileNetV2": "mobilenet_v2", "VGG16": "vgg16"}[name]
    base = getattr(keras.applications, name)(include_top=False, weights=None,
                                             input_shape=(32, 32, 3))
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.RandomFlip()(inputs)  # the transfer-learning tutorial's model
    x = getattr(keras.applications, module).preprocess_input(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(base(x)))
    pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    expected = base(getattr(keras.applications, module).preprocess_input(
        pixels.astype(np.float32))).numpy().mean(axis=(1, 2))
    got = model(preprocessing_for(model)(pixels), training=False)  # no random flip
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_names_alone_do_not_make_an_application():
    # ResNet50's layer names on a model that is not a ResNet (kvis once said caffe here)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(64, 7, strides=2, name="conv1_conv")(inputs)
    x = keras.layers.Conv2D(8, 3, name="conv5_block3_3_conv")(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="impostor")
    with pytest.raises(KvisError, match=r"^cannot tell how model 'impostor' expects its pixels: "
                                        r".*--preprocess NAME"):
        preprocessing_for(model)


def test_a_plain_custom_cnn_is_refused_with_one_line():
    from conftest import tiny_cnn

    with pytest.raises(KvisError, match=r"^cannot tell how model 'tiny' .*--preprocess") as error:
        preprocessing_for(tiny_cnn())
    assert "\n" not in str(error.value)


@pytest.mark.integration
def test_a_recognised_imagenet_family_with_1000_outputs_names_imagenet_classes():
    model = keras.applications.MobileNet(weights=None, input_shape=(32, 32, 3))
    assert class_names(model)[1] == "goldfish" and preprocessing_for(model).name == "tf"
    efficient = keras.applications.EfficientNetB0(weights=None, input_shape=(32, 32, 3))
    assert class_names(efficient) is None  # rescales itself: raw pixels, nothing more known


@pytest.mark.parametrize("scale, offset, name", [
    ([1 / (255 * s) for s in (0.229, 0.224, 0.225)],
     [-m / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))], "torch"),
    (1 / 127.5, -1, "tf"),
    (None, None, "none"),
    (0.5, 3.0, "affine:mean=-6,std=2"),
])
def test_a_keras_hub_classifier_is_preprocessed_as_its_image_converter(scale, offset, name):
    import keras_hub
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64],
        stackwise_num_blocks=[1], stackwise_num_strides=[1], block_type="basic_block",
        use_pre_activation=False, image_shape=(16, 16, 3))
    converter = keras_hub.layers.ResNetImageConverter(image_size=(16, 16), scale=scale,
                                                      offset=offset)
    model = keras_hub.models.ResNetImageClassifier(
        backbone=backbone, num_classes=2,
        preprocessor=keras_hub.models.ResNetImageClassifierPreprocessor(converter))
    assert preprocessing_for(model).name == name
    pixels = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(preprocessing_for(model)(pixels), converter(pixels), atol=2e-6)
    without = keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=2)
    with pytest.raises(KvisError, match="cannot tell how model"):
        preprocessing_for(without)
