"""The API contract of docs/glossary.md, held for every public name and every command.

It walks `kvis.__all__` (functions, the classes a user constructs, the public methods of every
public class, and the functions of `kvis.objectives`) and every option of the `kvis` command,
so a new name that drifts from the glossary fails here:

(a) at most three positional parameters, the rest keyword-only;
(b) no parameter named from the drift list below;
(c) every `plot_*` is `plot_*(result, *, ax=None | fig=None, title=None, ...)` and returns the
    Figure it drew in (checked by calls on tiny results, and one on the demo model);
(d) every command: channel indices only as `--channels` through the one parser, counts only as
    `--count`, `-l` only for `--layer`, several layers as `--layers A,B`;
and results keep their images one way: `pixels` with `names`.
"""

import dataclasses
import inspect

import click
import numpy as np
import pytest
from matplotlib.figure import Figure

import kvis
from kvis.cli import common, main

# Parameter names the glossary replaced, with the word to use instead.
DRIFT = {
    "top": "count (how many)",
    "k": "count (how many)",
    "n": "count (how many)",
    "number": "count (how many)",
    "max_filters": "count (how many)",
    "max_outputs": "count (how many)",
    "max_channels": "count (how many)",
    "units": "channels (indices) or count (how many)",
    "index": "channels (indices), classes or target",
    "indices": "channels",
    "filter": "channels",
    "filters": "channels (indices), or a name saying it is layers (filter_layers)",
}
# Command options the glossary replaced: --channels (indices) and --count (how many).
DRIFT_OPTIONS = {"--filter", "--filters", "--top", "--k", "--max-filters", "--max-outputs",
                 "--per-class", "--units", "--index", "--number", "-n", "--memory"}


def _public():
    """`(name, object)` of every function and class of `kvis.__all__`, and the functions of
    `kvis.objectives`."""
    found = []
    for name in kvis.__all__:
        value = getattr(kvis, name)
        if inspect.ismodule(value):
            found += [(f"{name}.{n}", f) for n, f in vars(value).items()
                      if inspect.isfunction(f) and not n.startswith("_")
                      and f.__module__ == value.__name__]
        else:
            found.append((name, value))
    return found


def _callables():
    """`(name, function)` of everything whose signature the contract holds: functions, the
    constructors of classes a user builds (not results: their dataclass fields are the
    constructor), and public methods defined in kvis."""
    for name, value in _public():
        if not inspect.isclass(value):
            yield name, value
            continue
        if not dataclasses.is_dataclass(value) and "__init__" in vars(value):
            yield f"{name}.__init__", value.__init__
        for method, function in vars(value).items():
            if (inspect.isfunction(function) and not method.startswith("_")
                    and function.__module__.startswith("kvis")):
                yield f"{name}.{method}", function


def _violations():
    found = set()
    for name, function in _callables():
        parameters = list(inspect.signature(function).parameters.values())
        if parameters and parameters[0].name in ("self", "cls"):
            parameters = parameters[1:]
        positional = [p for p in parameters if p.kind == p.POSITIONAL_OR_KEYWORD]
        if len(positional) > 3:
            found.add(f"{name}: {len(positional)} positional parameters "
                      f"({', '.join(p.name for p in positional)})")
        for p in parameters:
            if p.name in DRIFT:
                found.add(f"{name}: parameter {p.name!r} (use {DRIFT[p.name]})")
        names = {p.name for p in parameters}
        if {"ax", "fig"} <= names:
            found.add(f"{name}: takes both ax and fig")
    for name, value in _public():
        # ModelImage is one loaded image (the input), not a result: it has one name.
        if inspect.isclass(value) and dataclasses.is_dataclass(value) and name != "ModelImage":
            fields = {f.name for f in dataclasses.fields(value)}
            if "pixels" in fields and "names" not in fields:
                found.add(f"{name}: stores its image as pixels with "
                          f"{'name' if 'name' in fields else 'no names'}, not names")
            arrays = {f.name for f in dataclasses.fields(value) if f.type not in (str, "str")}
            for field in sorted(arrays & {"image", "original"}):  # not a name (a str)
                found.add(f"{name}: stores an image in field {field!r}")
    return found


def _plot_signature(name, function):
    """What is wrong with a plot_* signature (empty when it is right)."""
    parameters = list(inspect.signature(function).parameters.values())
    problems = []
    if not parameters or parameters[0].name != "result" or \
            parameters[0].kind != parameters[0].POSITIONAL_OR_KEYWORD:
        problems.append("result is not its first parameter")
    if [p.name for p in parameters[1:] if p.kind != p.KEYWORD_ONLY]:
        problems.append("takes more than the result by position")
    panel = [p for p in parameters if p.name in ("ax", "fig")]
    if len(panel) != 1 or panel[0].default is not None:
        problems.append("does not take exactly one of ax=None or fig=None")
    if not any(p.name == "title" and p.default is None for p in parameters):
        problems.append("takes no title=None")
    return [f"{name}: {problem}" for problem in problems]


def test_public_names_follow_the_glossary():
    found = _violations()
    assert not found, "\n".join(sorted(found))


def test_every_plot_function_takes_the_result_then_keywords():
    plots = [(name, value) for name, value in _public() if name.startswith("plot_")]
    assert len(plots) >= 15
    problems = [problem for name, function in plots
                for problem in _plot_signature(name, function)]
    assert not problems, "\n".join(problems)


def test_plot_functions_return_the_figure_they_draw_in():
    from kvis.layers.feature_maps import FeatureMaps
    from kvis.layers.filters import Filters
    from kvis.plot.figures import NotebookFigure

    maps = FeatureMaps({"conv": np.arange(2 * 3 * 3 * 4, dtype=np.float32).reshape(2, 3, 3, 4)},
                       np.zeros((2, 6, 6, 1), np.uint8), ["a", "b"], ("conv",), "hand")
    kernel = np.random.default_rng(0).normal(size=(3, 3, 1, 4)).astype(np.float32)
    for draw in (lambda **o: kvis.plot_filters(Filters(kernel, "conv"), **o),
                 lambda **o: kvis.plot_feature_maps(maps, image=1, count=2, **o),
                 lambda **o: kvis.plot_layer_summary(maps, **o),
                 lambda **o: kvis.plot_feature_overview(maps, count=2, **o)):
        assert isinstance(draw(title="t"), Figure)
        sub = NotebookFigure().subfigures(1, 2)[0]
        assert draw(fig=sub) is sub


def test_a_plot_of_a_real_result_is_a_figure(demo):
    image = kvis.load_image(kvis.demo_images()[0][0], demo)
    maps = kvis.feature_maps(demo, image, ["block1_conv1", "block2_conv1"], progress=False)
    figure = kvis.plot_feature_maps(maps, layer="block2_conv1", count=4, title="four")
    assert isinstance(figure, Figure) and figure._suptitle.get_text() == "four"
    assert len(figure.axes[0].texts) == 4  # the four strongest maps, labelled


def _options():
    for command_name, command in main.commands.items():
        for param in command.params:
            if isinstance(param, click.Option):
                yield command_name, param


@pytest.mark.parametrize("command_name, option", list(_options()),
                         ids=[f"{c} {o.opts[0]}" for c, o in _options()])
def test_every_command_option_follows_the_glossary(command_name, option):
    names = set(option.opts) | set(option.secondary_opts)
    assert not names & DRIFT_OPTIONS, f"kvis {command_name}: {sorted(names & DRIFT_OPTIONS)}"
    parses_channels = isinstance(option.type, common.ChannelList)
    assert ("--channels" in names) == parses_channels, \
        f"kvis {command_name} {option.opts}: channel indices are --channels, parsed as one"
    if "--count" in names:
        assert isinstance(option.type, click.IntRange), f"kvis {command_name} --count"
    if "-l" in names:
        assert names == {"-l", "--layer"} and not option.multiple, \
            f"kvis {command_name}: -l is --layer (one layer)"
    if "--layers" in names:
        assert names == {"--layers"} and isinstance(option.type, common.LayerList), \
            f"kvis {command_name}: --layers A,B with no short flag"


def test_the_one_channel_parser():
    parse = common.ChannelList().convert
    assert parse("0,3,5-9", None, None) == [0, 3, 5, 6, 7, 8, 9]
    with pytest.raises(click.BadParameter, match="'5-2' is a backwards range; write 2-5"):
        parse("5-2", None, None)
    with pytest.raises(click.BadParameter, match="use indices and ranges like 3,17,40-47"):
        parse("three", None, None)
