"""The microscope's survey as an Apache Beam pipeline, for datasets that outgrow one machine.

The same pipeline as the dataset scan on Beam (`kvis.dataset.beam.run_sharded`): the dataset's
batches are cut into shards; each worker loads the model once and runs the in-process survey's
pass over its shards (`kvis.microscope.survey.scan_with_peaks`, the scan's compiled step with
each image's peaks) and, for a classifier whose data has labels, the class contributions' sums
(`contribution_sums`); a combiner merges the shards' scans (`merge_scans`), their peaks (rows
by image id) and the sums (by addition), and the result is written with `save_survey`, the
file `build_microscope(..., survey=...)` builds a site from. Concepts are not dissected here.
"""

import functools

import numpy as np

from kvis.core.errors import KvisError
from kvis.core.models import load_model
from kvis.dataset.beam import require_beam, run_sharded, shard_batches, shards
from kvis.dataset.scan import merge_scans
from kvis.dataset.sources import image_source
from kvis.microscope.survey import (
    PURPOSE,
    Survey,
    contribution_means,
    contribution_sums,
    has_contributions,
    save_survey,
    scan_with_peaks,
    surveyed_layers,
)


def survey_on_beam(model, data, out, *, layers=None, weights="imagenet", class_names=None,
                   preprocessing=None, count=9, batch_size=32, batches_per_shard=20,
                   options=None):
    """Survey a dataset for the microscope with an Apache Beam pipeline; write it to `out`.

    Args:
        model: what `kvis.load_model` takes: "vgg16", "resnet50", "demo" or a model file the
            workers can read (each worker loads it once).
        data: what `kvis.image_source` takes, readable by the workers: a folder, an IDX file or
            "demo" (its own labels give the class contributions).
        out: the survey file to write (.npz, as `kvis.microscope.survey.save_survey` writes).
        layers: as for `kvis.microscope.survey.survey`.
        weights, class_names, preprocessing: as for `kvis.load_model`.
        count, batch_size: as for `kvis.microscope.survey.survey`.
        batches_per_shard: batches a worker surveys per unit of work.
        options: `apache_beam.options.pipeline_options.PipelineOptions` (default: the
            DirectRunner), e.g. `PipelineOptions(runner="DataflowRunner", project=...)`.

    Raises:
        KvisError: Apache Beam is not installed, or what `survey` raises.

    Example:
        >>> survey_on_beam("model.keras", "gs://bucket/images/", "survey.npz", options=options)
        >>> kvis.build_microscope(model, "images/", "site/", survey="survey.npz")
    """
    require_beam()
    if int(count) < 1:
        raise KvisError(f"count must be at least 1; got {count}")
    spec = dict(spec=model, weights=weights, class_names=class_names,
                preprocessing=preprocessing)
    net, source = load_model(**spec), image_source(data)
    paths = surveyed_layers(net, layers)
    contributions = has_contributions(net, source)  # labels checked before the pipeline
    worker = functools.partial(_survey_worker, paths=paths, count=int(count),
                               batch_size=batch_size, contributions=contributions)
    finish = functools.partial(_write_survey, out=str(out), model=net.name, data=data,
                               paths=paths)
    run_sharded(spec, data, shards(source, batch_size, batches_per_shard), worker=worker,
                merge=_merge_parts, finish=finish, options=options)


def _survey_worker(model, source, *, paths, count, batch_size, contributions):
    """`survey(start, stop)`: of batches [start, stop), `(scan, ids, peaks, sums)` where
    sums is `contribution_sums`'s `(totals, counts)` over the last layer, or None."""

    def survey(start, stop):
        def batches():
            return shard_batches(source, model, start, stop, batch_size=batch_size)

        scan, ids, peaks = scan_with_peaks(model, source, paths, batches=batches(), count=count)
        sums = None
        if contributions:
            sums = contribution_sums(model, source, paths[-1], batches=batches(),
                                     batch_size=batch_size)
        return scan, ids, peaks, sums

    return survey


def _merge_parts(*parts):
    """The shards' `(scan, ids, peaks, sums)` as one: scans merged, rows concatenated, sums
    added."""
    scans, ids, peaks, sums = zip(*parts)
    added = None if sums[0] is None else (sum(s[0] for s in sums), sum(s[1] for s in sums))
    return (merge_scans(*scans), np.concatenate(ids),
            {path: np.concatenate([p[path] for p in peaks]) for path in peaks[0]}, added)


def _write_survey(merged, out, model, data, paths):
    """The merged shards as a `Survey` (rows in image-id order), saved to `out`.

    Raises:
        KvisError: no image could be read.
    """
    scan, ids, peaks, sums = merged
    source = image_source(data)
    if not scan.images:
        raise KvisError(f"{PURPOSE}: no image of {source.description} could be read")
    order = np.argsort(ids, kind="stable")
    known = None if source.labels is None else source.labels[ids[order]]
    contributions = {}
    if sums is not None and np.any(known >= 0):
        contributions[paths[-1]] = contribution_means(*sums)
    save_survey(Survey(model, paths, scan, {path: rows[order] for path, rows in peaks.items()},
                       known, contributions, None), out)
