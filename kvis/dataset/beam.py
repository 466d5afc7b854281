"""The dataset scan as an Apache Beam pipeline, for datasets that need a cluster.

The dataset's batches are cut into shards; each worker loads the model once and runs the same
per-batch function as the in-process scan (`kvis.dataset.scan.batch_runner`) over its shards;
a combiner merges the shards' states (`merge_scans`, exact for any split), and the result is
written as a scan index (`kvis.dataset.examples.write_index`). It runs on the DirectRunner here
and unchanged on Dataflow, Flink or Spark, given pipeline options and a model file and data
that the workers can read. Install with `pip install "kvis[beam]"`.

`run_sharded` is the pipeline itself, shared with the microscope's survey
(`kvis.microscope.beam`): shards in, a worker function per shard, a merge, a final step.
"""

import functools
import itertools

from kvis.core.errors import KvisError


def scan_on_beam(model, data, out, *, layers=None, weights="imagenet", class_names=None,
                 preprocessing=None, count=9, strongest="images", batch_size=32,
                 batches_per_shard=20, options=None):
    """Scan a dataset with an Apache Beam pipeline and write the scan's index to `out`.

    Args:
        model: what `kvis.load_model` takes: "vgg16", "resnet50", "demo" or a model file the
            workers can read (each worker loads it once).
        data: what `kvis.dataset.sources.image_source` takes, readable by the workers: a folder, an
            IDX file or "demo".
        out: the JSON index to write (see `kvis.dataset.examples.read_index`).
        layers: as for `kvis.dataset.scan.scan`.
        weights, class_names, preprocessing: as for `kvis.load_model`.
        count, strongest, batch_size: as for `kvis.dataset.scan.scan`.
        batches_per_shard: batches a worker scans per unit of work.
        options: `apache_beam.options.pipeline_options.PipelineOptions` (default: the
            DirectRunner), e.g. `PipelineOptions(runner="DataflowRunner", project=...)`.

    Raises:
        KvisError: Apache Beam is not installed, or what the scan raises.

    Example:
        >>> scan_on_beam("demo", "demo", "scan/index.json", layers=["block2_conv2"], count=9)
    """
    from kvis.core.models import load_model
    from kvis.dataset.scan import merge_scans, scan_layers
    from kvis.dataset.sources import image_source
    from kvis.dataset.topk import checked_strongest

    require_beam()
    checked_strongest(strongest)
    spec = dict(spec=model, weights=weights, class_names=class_names,
                preprocessing=preprocessing)
    paths = scan_layers(load_model(**spec), layers)
    worker = functools.partial(_scan_worker, paths=paths, count=count, strongest=strongest,
                               batch_size=batch_size)
    run_sharded(spec, data, shards(image_source(data), batch_size, batches_per_shard),
                worker=worker, merge=merge_scans,
                finish=functools.partial(_write_index, out=str(out), data=data),
                options=options)


def require_beam():
    """The `apache_beam` module.

    Raises:
        KvisError: Apache Beam is not installed (with the command that installs it).
    """
    try:
        import apache_beam
    except ImportError:
        raise KvisError('Apache Beam is not installed: pip install "kvis[beam]"') from None
    return apache_beam


def shards(source, batch_size, batches_per_shard):
    """`[(start, stop)]`: the batches of `source`, `batches_per_shard` at a time.

    Raises:
        KvisError: batches_per_shard below 1, or a source whose length is unknown.
    """
    if batches_per_shard < 1:
        raise KvisError(f"batches_per_shard must be at least 1; got {batches_per_shard}")
    batches = -(-len(source) // batch_size)
    return [(start, min(start + batches_per_shard, batches))
            for start in range(0, batches, batches_per_shard)]


def run_sharded(spec, data, shard_list, *, worker, merge, finish, options=None):
    """Run a sharded pass over a dataset as a Beam pipeline.

    Each worker loads the model (`kvis.load_model(**spec)`) and the data once, then
    `work = worker(model, source)`; every shard `(start, stop)` gives `work(start, stop)`;
    `merge(*results)` combines them (it must not depend on their order or grouping), and
    `finish(merged)` runs once on the result (it writes it: on a cluster nothing comes back).
    `worker`, `merge` and `finish` must be picklable: module functions, `functools.partial`.

    Raises:
        KvisError: Apache Beam is not installed.
    """
    beam = require_beam()
    work_on, combine = _pipeline_steps(beam)
    with beam.Pipeline(options=options) as pipeline:
        _ = (pipeline
             | "shards" >> beam.Create(shard_list)
             | "work" >> beam.ParDo(work_on(spec, data, worker))
             | "merge" >> beam.CombineGlobally(combine(merge))
             | "finish" >> beam.Map(finish))


def shard_batches(source, model, start, stop, *, batch_size):
    """The batches [start, stop) of `source`, as `model` takes them."""
    batches = source.batches(model, batch_size=batch_size, start=start)
    return itertools.islice(batches, stop - start)


def _scan_worker(model, source, *, paths, count, strongest, batch_size):
    """`scan(start, stop) -> Scan`: the scan state of batches [start, stop)."""
    from kvis.dataset.scan import batch_runner, empty_scan

    run = batch_runner(model, paths, count=count, strongest=strongest)

    def scan(start, stop):
        state = empty_scan(model, paths, source, count=count, strongest=strongest)
        for batch in shard_batches(source, model, start, stop, batch_size=batch_size):
            state = run(state, batch)
        return state

    return scan


def _write_index(found, out, data):
    from kvis.dataset.examples import write_index
    from kvis.dataset.sources import image_source

    write_index(found, out, names=image_source(data).names)


def _pipeline_steps(beam):
    """The DoFn that works on a shard and the CombineFn that merges the results (Beam classes,
    made once Beam is imported)."""
    from kvis.core.models import load_model
    from kvis.dataset.sources import image_source

    class WorkOnShard(beam.DoFn):
        """`worker(model, source)(start, stop)` for each shard; the model is loaded once."""

        def __init__(self, spec, data, worker):
            self.spec, self.data, self.worker = spec, data, worker

        def setup(self):
            self.work = self.worker(load_model(**self.spec), image_source(self.data))

        def process(self, shard):
            yield self.work(*shard)

    class Merge(beam.CombineFn):
        """Results merged into one with `merge` (exact for any split)."""

        def __init__(self, merge):
            self.merge = merge

        def create_accumulator(self):
            return []

        def add_input(self, results, result):
            return [self.merge(*results, result)]

        def merge_accumulators(self, accumulators):
            results = [result for results in accumulators for result in results]
            return [self.merge(*results)] if results else []

        def extract_output(self, results):
            return results[0]

    return WorkOnShard, Merge
