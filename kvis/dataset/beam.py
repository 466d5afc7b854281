"""The dataset scan as an Apache Beam pipeline, for datasets that need a cluster.

The dataset's batches are cut into shards; each worker loads the model once and runs the same
per-batch function as the in-process scan (`kvis.dataset.scan.batch_runner`) over its shards;
a combiner merges the shards' states (`merge_scans`, exact for any split), and the result is
written as a scan index (`kvis.dataset.examples.write_index`). It runs on the DirectRunner here
and unchanged on Dataflow, Flink or Spark, given pipeline options and a model file and data
that the workers can read. Install with `pip install "kvis[beam]"`.
"""

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
    beam = _beam()
    from kvis.core.models import load_model
    from kvis.dataset.scan import scan_layers
    from kvis.dataset.sources import image_source
    from kvis.dataset.topk import checked_strongest

    checked_strongest(strongest)
    if batches_per_shard < 1:
        raise KvisError(f"batches_per_shard must be at least 1; got {batches_per_shard}")
    spec = dict(spec=model, weights=weights, class_names=class_names,
                preprocessing=preprocessing)
    net, source = load_model(**spec), image_source(data)
    paths = scan_layers(net, layers)
    batches = -(-len(source) // batch_size)
    shards = [(start, min(start + batches_per_shard, batches))
              for start in range(0, batches, batches_per_shard)]
    scan_shard, merge_shards = _pipeline_steps(beam)
    with beam.Pipeline(options=options) as pipeline:
        _ = (pipeline
             | "shards" >> beam.Create(shards)
             | "scan" >> beam.ParDo(scan_shard(spec, data, paths, count, strongest, batch_size))
             | "merge" >> beam.CombineGlobally(merge_shards())
             | "write" >> beam.Map(_write_index, str(out), data))


def _beam():
    try:
        import apache_beam
    except ImportError:
        raise KvisError('Apache Beam is not installed: pip install "kvis[beam]"') from None
    return apache_beam


def _write_index(found, out, data):
    from kvis.dataset.examples import write_index
    from kvis.dataset.sources import image_source

    write_index(found, out, names=image_source(data).names)


def _pipeline_steps(beam):
    """The DoFn that scans a shard and the CombineFn that merges shards (Beam classes, made
    once Beam is imported)."""
    from kvis.core.models import load_model
    from kvis.dataset.scan import batch_runner, empty_scan, merge_scans
    from kvis.dataset.sources import image_source

    class ScanShard(beam.DoFn):
        """The scan state of batches [start, stop) of the dataset."""

        def __init__(self, spec, data, paths, count, strongest, batch_size):
            self.spec, self.data, self.paths = spec, data, paths
            self.count, self.strongest, self.batch_size = count, strongest, batch_size

        def setup(self):
            self.model = load_model(**self.spec)
            self.source = image_source(self.data)
            self.run = batch_runner(self.model, self.paths, count=self.count,
                                    strongest=self.strongest)

        def process(self, shard):
            start, stop = shard
            state = empty_scan(self.model, self.paths, self.source, count=self.count,
                               strongest=self.strongest)
            batches = self.source.batches(self.model, batch_size=self.batch_size, start=start)
            for batch in itertools.islice(batches, stop - start):
                state = self.run(state, batch)
            yield state

    class MergeScans(beam.CombineFn):
        """Scan states merged into one (exact for any split)."""

        def create_accumulator(self):
            return []

        def add_input(self, states, state):
            return [merge_scans(*states, state)]

        def merge_accumulators(self, accumulators):
            states = [state for states in accumulators for state in states]
            return [merge_scans(*states)] if states else []

        def extract_output(self, states):
            return states[0]

    return ScanShard, MergeScans
