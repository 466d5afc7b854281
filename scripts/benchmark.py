"""Benchmark every kvis technique against the model's own speed limit and against its peers.

For the demo model, VGG16 and ResNet50 (random weights), at fixed settings, each technique is
timed (the fastest of repeats after a warm-up) next to the time the model itself needs for the
work it does, compiled forward or forward+backward passes at the same batch size ("limit",
timed as runs of passes after each call of the technique, so that the machine's drift cancels),
and next to keract, tf-keras-vis and tf-explain on the same model, inputs and settings. The
peers live in their own virtual environment (`--setup` makes it, `.bench-peers/`): each runs
first on Keras 3; one that fails there is reported with its error and run again on tf-keras
(`TF_USE_LEGACY_KERAS=1`). Occlusion on VGG16 and ResNet50 is also timed full against
incremental inference (exact, and Krypton's two approximations), in a table with the speedups
over the full recomputation and over tf-explain and the approximations' error. Then the peak
resident memory (VmHWM) of SmoothGrad (32 VGG16 images x 50 samples) and Integrated Gradients
(32 images x 128 steps), each in a fresh process, beside the model's own footprint and the
`memory_mb` budget they were given; and a summary line per model: the rows where kvis is behind
a peer (a smaller fraction of the limit) or below `TARGET` of the limit. A row behind a peer is
timed again with that peer in one process (the paired check, kvis imported from this checkout
in the peers' environment), row after row for `PAIRED_ROUNDS` rounds, and stays behind only if
the peer is ahead in every round. Then the commands users run: `kvis report` with no arguments
and `kvis features resnet50 IMAGE --all`, with compute and drawing separately.

Usage (from the repository root, kvis installed in the running Python):
    python scripts/benchmark.py --setup            # once: the peers' environment, then exit
    python scripts/benchmark.py                    # everything (about 45 min on 2 cores)
    python scripts/benchmark.py --jit both         # on a GPU: XLA off and on
    python scripts/benchmark.py --no-peers --no-memory --no-commands \
        --models demo vgg16 --only "maximize 1 filter"   # a few rows
    python scripts/benchmark.py --models vgg16 resnet50 --no-memory --no-commands \
        --only occlusion                           # the occlusion rows, with tf-explain's
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS = HERE.parent / ".bench-peers"
PEER_PACKAGES = ("keract==4.5.2", "tf-keras-vis==0.8.7", "tf-explain==0.3.1",
                 "opencv-python-headless")  # tf-explain needs OpenCV but does not require it
PEER_LIBRARIES = ("keract", "tf-keras-vis", "tf-explain")
# kvis's own dependencies for the paired check, which imports kvis from this checkout in the
# peers' environment (its OpenCV is the headless one above).
PAIRED_PACKAGES = ("matplotlib", "click", "tqdm")
PAIRED_ROUNDS = 5  # a peer ahead in every round by chance alone: 1 in 2**5
MODELS = ("demo", "vgg16", "resnet50")
MEMORY_TECHNIQUES = ("model", "smoothgrad", "integrated-gradients")
MEMORY_MODEL = "vgg16"
TARGET = 0.8  # the fraction of the limit every kvis row should reach


def setup():
    """A virtual environment with this TensorFlow, tf-keras and the peers."""
    import tensorflow as tf

    version = ".".join(tf.__version__.split(".")[:2])
    subprocess.run([sys.executable, "-m", "venv", PEERS], check=True)
    subprocess.run([PEERS / "bin" / "pip", "install", "-q", f"tensorflow=={version}.*",
                    f"tf-keras=={version}.*", *PEER_PACKAGES, *PAIRED_PACKAGES], check=True)


def work(python, model, libraries, repeats, jit=False, legacy=False, only=None, memory=None,
         rounds=1):
    """The rows of one benchmark process (`bench_work.py`); `rounds` > 1 times the libraries'
    rows that many times, library after library. In the peers' environment kvis is imported
    from this checkout."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if legacy:
        env["TF_USE_LEGACY_KERAS"] = "1"
    if "kvis" in libraries and python != sys.executable:
        env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "rows.json"
        command = [python, HERE / "bench_work.py", "--model", model, "--libraries",
                   *libraries, "--repeats", str(repeats), "--out", out,
                   *(["--jit"] if jit else []), *(["--only", *only] if only else []),
                   *(["--memory", memory] if memory else []),
                   *(["--rounds", str(rounds)] if rounds > 1 else [])]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode or not out.exists():
            message = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
            return [dict(technique="(all)", library=lib, model=model, note=f"fails: {message}")
                    for lib in libraries]
        return json.loads(out.read_text())


def memory_rows(model, jit=False):
    """Peak resident memory, one fresh process each: the model alone, then each technique."""
    return [entry for technique in MEMORY_TECHNIQUES
            for entry in work(sys.executable, model, ["kvis"], 1, jit=jit, memory=technique)]


def memory_table(rows):
    """A markdown table: what ran, its peak resident memory, over the model's own, budget."""
    own = next((r["peak_mb"] for r in rows if r["technique"] == "model" and r.get("peak_mb")),
               None)
    lines = ["| model | technique | work | peak resident MB (VmHWM) | over the model alone | "
             "memory_mb | time |", "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        if r.get("peak_mb") is None:
            lines.append(f"| {r['model']} | {r['technique']} | {r.get('note', '')} | | | | |")
            continue
        over = f"{r['peak_mb'] - own:,.0f}" if own and r["technique"] != "model" else ""
        budget = r.get("budget_mb") or ("" if r["technique"] == "model" else "not taken")
        lines.append(f"| {r['model']} | {r['technique']} | {r['work']} | {r['peak_mb']:,.0f} | "
                     f"{over} | {budget} | {_duration(r['seconds'])} |")
    return "\n".join(lines)


def peer_rows(model, repeats, only=None):
    """The peers on Keras 3, and those that fail there again on tf-keras (only the rows whose
    technique contains one of `only`, where given)."""
    if not (PEERS / "bin" / "python").exists():
        return [dict(technique="(all)", library=lib, model=model,
                     note="not installed: run scripts/benchmark.py --setup")
                for lib in PEER_LIBRARIES]
    rows = [r for r in work(PEERS / "bin" / "python", model, PEER_LIBRARIES, repeats,
                            only=only)
            if r["library"] != "model"]  # the same limit as kvis's process measures
    failed = [r["library"] for r in rows if r["technique"] == "(all)"]
    for entry in rows:
        if entry["technique"] == "(all)":
            entry["note"] = entry["note"].replace("fails:", "does not run on Keras 3:")
    if failed:
        legacy = work(PEERS / "bin" / "python", model, failed, repeats, legacy=True,
                      only=only)
        for entry in legacy:
            entry["library"] += " (tf-keras)"
        rows += legacy
    return rows


def paired_rows(model, found):
    """The paired check of the kvis rows `found` behind a peer that runs on Keras 3: kvis and
    those peers in one process of the peers' environment, row after row for `PAIRED_ROUNDS`
    rounds (one timed call each), so that the machine's load hits both sides alike."""
    behind = [b for b in found["behind"] if b["peer"] in PEER_LIBRARIES and not b["jit"]]
    if not behind:
        return []
    rows = work(PEERS / "bin" / "python", model,
                ["kvis", *sorted({b["peer"] for b in behind})], 1,
                only=sorted({b["technique"] for b in behind}), rounds=PAIRED_ROUNDS)
    return [dict(r, paired=True) for r in rows if r["library"] != "model"]


def paired_table(rows):
    """A markdown table of the paired check: each library's fraction of its own limit, round
    by round."""
    lines = ["| model | technique | library | of the limit, round by round |",
             "|---|---|---|---|"]
    rounds = {}
    for r in rows:
        rounds.setdefault((r["model"], r["technique"], r["library"]), []).append(
            f"{_of_limit(r):.0%}" if r.get("limit_seconds") else r.get("note", ""))
    lines += [f"| {model} | {technique} | {library} | {' '.join(fractions)} |"
              for (model, technique, library), fractions in rounds.items()]
    return "\n".join(lines) if len(lines) > 2 else ""


def command_rows(image):
    """The commands users run, end to end (TensorFlow's start included)."""
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, args in (("kvis report (no arguments)", ["report", "--out", folder]),
                           ("kvis features resnet50 IMAGE --all",
                            ["features", "resnet50", image, "--weights", "none", "--all",
                             "--out", folder])):
            start = time.perf_counter()
            done = subprocess.run([Path(sys.executable).with_name("kvis"), *args],
                                  capture_output=True, text=True)
            seconds = time.perf_counter() - start
            detail = (done.stdout.strip().splitlines() or [done.stderr.strip()])[-1]
            rows.append((name, seconds, detail))
    return rows


def table(rows):
    """A markdown table: model, technique, library, time, throughput, ratio, peak memory."""
    lines = ["| model | technique | library | time | throughput | of the limit | peak MB |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        if r.get("seconds") is None:
            lines.append(f"| {r['model']} | {r['technique']} | {r['library']} | "
                         f"{r.get('note', '')} | | | |")
            continue
        unit = r["work"].split(" ", 1)[1]
        ratio = f"{_of_limit(r):.0%}" if r.get("limit_seconds") else ""
        ratio += "" if r.get("judged", True) else " (more work)"
        peak = f"{r['peak_mb']:,.0f}" if r.get("peak_mb") else ""
        jit = " (XLA)" if r.get("jit") and r["library"] in ("kvis", "model") else ""
        lines.append(f"| {r['model']} | {r['technique']} | {r['library']}{jit} | "
                     f"{_duration(r['seconds'])} | {_amount(r) / r['seconds']:,.3g} {unit}/s | "
                     f"{ratio} | {peak} |")
    return "\n".join(lines)


def add_speedups(rows):
    """Each kvis occlusion row gains its speedup over the full recomputation of its occluder
    (`speedup_full`) and over tf-explain's occlusion at tf-explain's own setting, position for
    position (`speedup_tf_explain`: one full pass per position, whatever the occluder)."""
    for r in rows:
        if r["library"] != "kvis" or "occluder" not in r or r.get("seconds") is None:
            continue
        same = [o for o in rows if o["model"] == r["model"] and o.get("seconds")
                and o["technique"].startswith("occlusion")]
        full = next((o["seconds"] for o in same if o["library"] == "kvis"
                     and o.get("way") == "full" and o["occluder"] == r["occluder"]
                     and o["jit"] == r["jit"]), None)
        peer = next((o for o in same if o["library"].startswith("tf-explain")), None)
        r["speedup_full"] = full / r["seconds"] if full else None
        r["speedup_tf_explain"] = (peer["seconds"] / _amount(peer) * _amount(r) / r["seconds"]
                                   if peer else None)


def overview(rows, models):
    """The README's markdown table: per technique and model, kvis's fraction of its limit and
    the best peer's, as each was timed once (the paired rounds are in `paired_table`). A
    technique is named without its settings ("score-cam, 64 channels": "score-cam")."""
    cells = {}
    for r in rows:
        if r.get("paired") or r.get("jit") or r["library"] == "model" \
                or not (r.get("seconds") and r.get("limit_seconds")) \
                or r.get("way", "auto") != "auto":
            continue
        cell = cells.setdefault(r["technique"].split(",")[0], {}).setdefault(r["model"], {})
        if r["library"] == "kvis":
            cell["kvis"] = f"{_of_limit(r):.0%}" + ("" if r.get("judged", True) else
                                                    " (more work)")
        elif _of_limit(r) > cell.get("peer", ("", 0))[1]:
            cell["peer"] = (r["library"], _of_limit(r))
    lines = [f"| technique | {' | '.join(models)} |", "|---|" + "---:|" * len(models)]
    for technique, by_model in cells.items():
        lines.append(f"| {technique} | " + " | ".join(
            _overview_cell(by_model.get(model, {})) for model in models) + " |")
    return "\n".join(lines)


def _overview_cell(cell):
    peer = f" ({cell['peer'][0]} {cell['peer'][1]:.0%})" if "peer" in cell else ""
    return f"{cell.get('kvis', '-')}{peer}" if cell else ""


def occlusion_table(rows):
    """A markdown table of kvis's occlusion rows: time, the speedups, the error, the fallback."""
    lines = ["| model | occluder (positions) | inference | time | of the limit | over full | "
             "over tf-explain | error max / mean | fallback |",
             "|---|---|---|---:|---:|---:|---:|---|---|"]
    for r in rows:
        if r["library"] != "kvis" or "occluder" not in r or r.get("seconds") is None:
            continue
        size, stride = r["occluder"]
        way = f"default: {r['inference']}" if r["way"] == "auto" else r["way"]
        error = " / ".join(f"{e:.2g}" for e in r["error"]) if r.get("error") else ""
        lines.append(f"| {r['model']} | {size} px / stride {stride} ({_amount(r):.0f}) | {way} | "
                     f"{_duration(r['seconds'])} | {r['limit_seconds'] / r['seconds']:.0%} | "
                     f"{_times(r['speedup_full'])} | {_times(r['speedup_tf_explain'])} | "
                     f"{error} | {r['fallback'] or '-'} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def summary(rows, models):
    """Per model, the kvis rows behind a peer and those below `TARGET` of the limit, with a
    line. A row is behind when a peer's row of the same technique reaches a larger fraction of
    its own limit (the passes that library runs): each fraction is timed in one process, the
    row interleaved with its limit, so the machine's drift cancels, where the seconds of two
    processes run minutes apart do not. Where the paired check ran (`paired_rows`), it
    decides: the row is behind only if the peer reached the larger fraction in every round."""
    found = {model: dict(behind=[], below=[]) for model in models}
    timed = [r for r in rows if r.get("seconds") and r.get("limit_seconds")]
    once = [r for r in timed if not r.get("paired")]
    for r in once:
        if r["library"] != "kvis":
            continue
        name, mine = r["technique"] + (" (XLA)" if r["jit"] else ""), _of_limit(r)
        for p in once:
            if p["model"] != r["model"] or p["technique"] != r["technique"] \
                    or p["library"] in ("kvis", "model") or _of_limit(p) <= mine:
                continue
            rounds = _rounds(timed, r, p["library"])
            if not rounds or all(peer > kvis for kvis, peer in rounds):
                found[r["model"]]["behind"].append(dict(
                    technique=r["technique"], jit=r["jit"], name=name, peer=p["library"],
                    peer_of_limit=_of_limit(p), of_limit=mine, rounds=len(rounds)))
        if mine < TARGET and r.get("judged", True):
            found[r["model"]]["below"].append(dict(name=name, of_limit=mine))
    for model, entry in found.items():
        parts = [f"{what}: " + ", ".join(_flagged(b) for b in entry[key])
                 for key, what in (("behind", "behind a peer"),
                                   ("below", f"below {TARGET} of the limit")) if entry[key]]
        entry["line"] = f"{model}: " + ("; ".join(parts) or "none")
    return found


def _flagged(entry):
    """One row of a summary line: its fraction of the limit, and the peer's where behind."""
    if "peer" not in entry:
        return f"{entry['name']} ({entry['of_limit']:.0%})"
    paired = (f"; {entry['peer']} ahead in all {entry['rounds']} paired rounds"
              if entry["rounds"] else "")
    return (f"{entry['name']} ({entry['peer']} {entry['peer_of_limit']:.0%} vs kvis "
            f"{entry['of_limit']:.0%} of the limit{paired})")


def _rounds(timed, mine, peer):
    """The paired check of kvis's row `mine` against `peer`: [(kvis's fraction of its limit,
    the peer's)] round by round (empty where it did not run)."""
    paired = {(r["library"], r["round"]): _of_limit(r) for r in timed if r.get("paired")
              and r["model"] == mine["model"] and r["technique"] == mine["technique"]}
    return [(fraction, paired[peer, turn]) for (library, turn), fraction in paired.items()
            if library == "kvis" and (peer, turn) in paired]


def _of_limit(r):
    return r["limit_seconds"] / r["seconds"]


def _amount(r):
    return float(r["work"].split(" ", 1)[0])


def _times(speedup):
    return f"{speedup:.1f}x" if speedup else ""


def _duration(seconds):
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def machine():
    import tensorflow as tf

    devices = ", ".join(sorted({d.device_type for d in tf.config.list_logical_devices()}))
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())
    return (f"{cpu}, {os.cpu_count()} cores; TensorFlow {tf.__version__}, devices: {devices}; "
            f"Python {platform.python_version()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", action="store_true", help="make the peers' environment")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jit", choices=("off", "on", "both"), default="off",
                        help="kvis and the limits with XLA (jit_compile) off, on, or both")
    parser.add_argument("--no-peers", action="store_true", help="kvis and the limits only")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory rows")
    parser.add_argument("--no-commands", action="store_true", help="skip the commands' times")
    parser.add_argument("--only", nargs="+", help="only the rows whose technique contains one "
                        "of these (kvis, the limits and the peers), e.g. 'maximize 1 filter'")
    parser.add_argument("--out", type=Path, default=Path("benchmark.json"),
                        help="the rows as JSON")
    parser.add_argument("--tables", type=Path, metavar="JSON",
                        help="print the tables of an earlier run's JSON, running nothing")
    args = parser.parse_args()

    if args.setup:
        return setup()
    if args.tables:
        saved = json.loads(args.tables.read_text())
        print(saved["machine"])
        return tables(saved["rows"], saved["summary"])
    start = time.perf_counter()
    about = machine()
    print(about, flush=True)
    rows = []
    for model in args.models:
        for jit in {"off": [False], "on": [True], "both": [False, True]}[args.jit]:
            rows += work(sys.executable, model, ["kvis"], args.repeats, jit=jit, only=args.only)
        if not args.no_peers:
            rows += peer_rows(model, args.repeats, args.only)
        print(f"{model} done, {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    add_speedups(rows)
    found = summary(rows, args.models)
    paired = [] if args.no_peers or not (PEERS / "bin" / "python").exists() else [
        entry for model in args.models for entry in paired_rows(model, found[model])]
    if paired:
        found = summary(rows + paired, args.models)
    rows += paired
    if not args.no_memory and MEMORY_MODEL in args.models:
        rows += memory_rows(MEMORY_MODEL, jit=args.jit == "on")
    tables(rows, found)
    if not args.no_commands:
        image = _demo_like_image()
        for name, seconds, detail in command_rows(image):
            print(f"{name}: {seconds:.1f} s ({detail})")
    args.out.write_text(json.dumps(dict(machine=about, rows=rows, summary=found), indent=1))
    print(f"benchmark: {time.perf_counter() - start:.0f} s in all; rows in {args.out}")


def tables(rows, found):
    """Print a run's tables (the rows, occlusion, the paired check, memory, the overview) and
    its summary lines."""
    memory = [r for r in rows if r.get("note") == "VmHWM"]  # the rows of `memory_rows`
    timed = [r for r in rows if not r.get("paired") and r not in memory]
    paired = [r for r in rows if r.get("paired")]
    print(table(timed))
    for title, text in (("", occlusion_table(timed)),
                        (f"The paired check, {PAIRED_ROUNDS} rounds:\n",
                         paired_table(paired)),
                        ("", memory_table(memory) if memory else ""),
                        ("Of the limit, kvis (the best peer):\n",
                         overview(timed, list(found)))):
        if text:
            print(f"\n{title}{text}")
    print("", *(entry["line"] for entry in found.values()), sep="\n")


def _demo_like_image():
    """A 224 px photo-like image for the commands: a shipped demo image, resized."""
    import cv2

    from kvis.core.demo import demo_images

    path = Path(tempfile.gettempdir()) / "kvis_benchmark_image.png"
    pixels = cv2.resize(demo_images()[0][0], (224, 224), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(path), pixels)
    return path


if __name__ == "__main__":
    main()
