"""Side by side with the original Sockeye 1.18.115 image captioner, in one run on one machine.

    python -m benchmarks.peer --peer /tmp/sockeye-peer --parts train --threads 1 --train-updates 100
    python -m benchmarks.peer --parts models caption --threads 1     # train both models once, then caption
    python -m benchmarks.peer --parts caption --ours-model MODEL --peer-model PEER_MODEL --threads 1
    python -m benchmarks.peer --parts processes --processes 2 --threads 2 --ours-model MODEL --peer-model PEER_MODEL
    python -m benchmarks.peer --parts extract --threads 2

``--peer`` is the folder the original's ``setup.sh`` made (``venv/``, ``sk.py``, ``sockeye-1.18.115/``); without it,
or without the data and CNN under ``--shared``, the benchmark says so and exits 0. ``--ours`` is the tree whose
``captioning`` package is run (default: this checkout; a snapshot of a commit gives stable figures while the checkout
changes). Both tools run with the same ``OMP_NUM_THREADS`` (each ``--threads`` value in turn), each run a fresh
process, in the order original, ours, ours, original (``--rounds``); every (part, thread count) writes one record,
``benchmarks/results/peer-PART-tTHREADS-<time>.json``, with every run's values, medians and ratios (> 1: ours better).

- models: trains each tool's tutorial model for captioning (``--model-updates``, a checkpoint every 200 updates) into
  ``--peer-model`` and ``--ours-model`` (new folders), one run each, before the other parts; records training speed,
  peak RSS, best validation perplexity and wall time of the whole run.
- train: the tutorial model (the original needs `TUTORIAL_PEER`'s flags to build it), FLICKR-A head_conv features in
  memory, ``--train-updates`` updates from scratch, one checkpoint at the end, no decoding: the median of the
  samples/s each tool logs, the process' peak RSS, the validation perplexity after the same updates, wall and CPU time.
  ``--simultaneous`` runs both tools at the same time in each round instead.
- caption: each tool's own trained model (``--peer-model``, ``--ours-model``: the models part trains them; ours may
  be an ONNX export of it, ``captioning.export_onnx``) captions the dev features at beam 3, batch 64 and batch 1,
  ``--max-output-length 30``: the captions/s each tool reports (model loading excluded by both), words per caption,
  peak RSS.
- processes: the same captioning with the threads in ``--processes`` processes: ours as ``captioner
  --search-processes N``; the original (no such option) as N processes started together on N interleaved parts of
  the input, its captions/s all lines over the longest part's processing time.
- extract: EfficientNet-Lite0 head_conv features of ``--extract-split``'s photos at batch 32: process wall time (CNN
  loading included) and the peak RSS of the process with its decode workers (sampled).
"""
import argparse
import shlex
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from benchmarks import harness
from benchmarks.harness import Job, Session
from benchmarks.train import TUTORIAL

# the original needs these to train the tutorial's model (its defaults differ)
TUTORIAL_PEER = ["--encoder", "image-pretrain-cnn", "--decoder", "rnn", "--num-layers", "1:1", "--rnn-num-hidden",
                 "512", "--rnn-decoder-state-init", "zero", "--rnn-attention-type", "mlp",
                 "--image-encoder-num-hidden", "512", "--num-embed", "512", "--batch-type", "sentence",
                 "--batch-size", "64", "--initial-learning-rate", "0.0003", "--gradient-clipping-type", "abs",
                 "--gradient-clipping-threshold", "1.0", "--bucket-width", "5", "--max-seq-len", "1:60",
                 "--weight-normalization", "--load-all-features-to-memory", "--seed", "13", "--use-cpu"]
PARTS = ("models", "train", "caption", "processes", "extract")

PEER_TRAIN_SPEED, OURS_TRAIN_SPEED = harness.PEER_TRAIN_SPEED, harness.OURS_TRAIN_SPEED
PEER_CAPTION_SPEED, OURS_CAPTION_SPEED = harness.PEER_CAPTION_SPEED, harness.OURS_CAPTION_SPEED
PEER_CAPTION_TIME = harness.PEER_CAPTION_TIME
SPEED = {"baseline": {"train": PEER_TRAIN_SPEED, "captioner": PEER_CAPTION_SPEED},
         "ours": {"train": OURS_TRAIN_SPEED, "captioner": OURS_CAPTION_SPEED}}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer", default="/tmp/sockeye-peer", help="the folder the original's setup.sh made")
    parser.add_argument("--ours", default=str(harness.REPO), help="tree whose captioning package is run")
    parser.add_argument("--shared", default=str(harness.REPO.parent / "shared"),
                        help="folder with data/flickr8k-sample and models/efficientnet-lite0")
    parser.add_argument("--bench", default="/work/bench",
                        help="features-head_conv/ and lists/ (python -m benchmarks.train --cache-dir BENCH "
                             "--speed-updates 0 --skip-quality makes them)")
    parser.add_argument("--work-dir", default=str(harness.OUTPUT / "peer"), help="logs and outputs of every run")
    parser.add_argument("--threads", nargs="+", default=["1"], help="OMP_NUM_THREADS values, both tools")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=["train"])
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (original, ours) in alternating order")
    parser.add_argument("--train-updates", type=int, default=100)
    parser.add_argument("--ours-train-args", default="",
                        help="more flags for ours in the train part, e.g. \"--processes 2\" (its memory is then the "
                             "sampled sum over its processes)")
    parser.add_argument("--record-suffix", default="",
                        help="appended to the record's name (peer-PART-tTHREADS-SUFFIX), to keep a variant's record "
                             "beside the default one, e.g. \"threads\" for ours in one process of 2 threads")
    parser.add_argument("--simultaneous", action="store_true",
                        help="train both tools at the same time in each round instead of one after the other")
    parser.add_argument("--model-updates", type=int, default=1600, help="the models part: updates of each model")
    parser.add_argument("--peer-model", default="/work/bench/peer-model")
    parser.add_argument("--peer-checkpoint", type=int, default=None, help="default: its params.best")
    parser.add_argument("--ours-model", default="/work/bench/ours-model")
    parser.add_argument("--ours-checkpoint", type=int, default=None, help="default: its params.best")
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--max-output-length", type=int, default=30)
    parser.add_argument("--caption-images", type=int, default=None,
                        help="caption only the first N dev images (default: all)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 1])
    parser.add_argument("--extract-split", choices=["train", "dev"], default="train")
    parser.add_argument("--processes", type=int, default=2,
                        help="the processes part: ours with --search-processes N, the original as N processes")
    harness.add_record_args(parser)
    args = harness.parse_recorded_args(parser, argv)
    return args


class Tools:
    """How to run each side: the original from ``--peer`` (``baseline``) and this project from ``--ours``."""

    def __init__(self, peer: Path, ours: Path, threads: str) -> None:
        self.peer, self.ours, self.threads = Path(peer), Path(ours), threads
        self.python = {"baseline": str(self.peer / "venv" / "bin" / "python"), "ours": sys.executable}
        original = harness.ours_environment(self.peer / "sockeye-1.18.115", threads)
        self.env = {"baseline": original, "ours": harness.ours_environment(self.ours, threads)}
        self.cwd = {"baseline": str(self.peer), "ours": str(self.ours)}

    def argv(self, side: str, cli: str, rest: Sequence[str]) -> List[str]:
        if side == "baseline":
            if cli == "extract_features":
                return [self.python[side], "-m", "sockeye.image_captioning.extract_features", *rest]
            return [self.python[side], str(self.peer / "sk.py"), cli, *rest]
        return [self.python[side], "-m", "captioning.%s" % cli, *rest]

    def job(self, side: str, cli: str, rest: Sequence[str], log: Path, threads: Optional[str] = None) -> Job:
        env = dict(self.env[side])
        if threads is not None:
            env["OMP_NUM_THREADS"] = threads
        return Job(self.argv(side, cli, rest), env, self.cwd[side], log)


def flickr_paths(shared: Path, bench: Path) -> Dict[str, Path]:
    data = shared / "data" / "flickr8k-sample"
    feats = bench / "features-head_conv"
    return {"data": data, "cnn": shared / "models" / "efficientnet-lite0" / "efficientnet-lite0", "feats": feats,
            "train_list": bench / "lists" / "train.features", "train_captions": bench / "lists" / "train.captions",
            "dev_list": feats / "dev.features", "dev_captions": data / "dev.captions.0"}


def train_rest(side: str, paths: Dict[str, Path], out: Path, updates: int,
               checkpoint_interval: Optional[int] = None, ours_extra: Sequence[str] = ()) -> List[str]:
    """Training arguments of one side: the same model, data and updates for both tools (one checkpoint at the end
    unless ``checkpoint_interval``); ``ours_extra``: more flags for ours (how it runs, not what it trains)."""
    common = ["--source-root", str(paths["feats"]), "--source", str(paths["train_list"]), "--target",
              str(paths["train_captions"]), "--validation-source", str(paths["dev_list"]), "--validation-target",
              str(paths["dev_captions"]), "--output", str(out), "--max-updates", str(updates),
              "--checkpoint-interval", str(checkpoint_interval or updates), "--decode-and-evaluate", "0"]
    if side == "baseline":
        return common + ["--validation-source-root", str(paths["feats"])] + TUTORIAL_PEER
    return common + ["--load-all-features-to-memory"] + TUTORIAL + list(ours_extra)


def caption_rest(side: str, args: argparse.Namespace, listing: Path, feats: Path, output: Path,
                 batch: int) -> List[str]:
    model, checkpoint = (args.peer_model, args.peer_checkpoint) if side == "baseline" else \
        (args.ours_model, args.ours_checkpoint)
    rest = ["--models", str(model), "--input", str(listing), "--source-root", str(feats), "--beam-size",
            str(args.beam_size), "--batch-size", str(batch), "--use-cpu", "--output", str(output),
            "--max-output-length", str(args.max_output_length)]
    return rest + (["--checkpoints", str(checkpoint)] if checkpoint is not None else [])


def extract_rest(paths: Dict[str, Path], images: Path, out: Path) -> List[str]:
    return ["--image-root", str(paths["data"]), "--input", str(images), "--output-root", str(out), "--output",
            str(out / "list"), "--image-encoder-model-path", str(paths["cnn"]), "--image-encoder-layer", "head_conv",
            "--source-image-size", "3", "224", "224", "--batch-size", "32", "--use-cpu"]


def speed_of(side: str, cli: str, output: str) -> float:
    """The median of the speeds a tool logs (training: every few updates; captioning: one line)."""
    values = harness.figures_in(SPEED[side][cli], output)
    if not values:
        raise harness.BenchmarkError("%s %s: no speed line in its log:\n%s" % (side, cli, output[-2000:]))
    return harness.median(values)


def words_per_caption(path: Path) -> float:
    lengths = [len(line.split()) for line in path.read_text().splitlines()]
    return sum(lengths) / max(1, len(lengths))


def models_part(session: Session, tools: Tools, paths: Dict[str, Path], work: Path,
                args: argparse.Namespace) -> None:
    """Train each tool's model for the caption and processes parts into ``--peer-model`` and ``--ours-model`` (the
    same model, ``--model-updates`` updates, a checkpoint every 200), one run each; records the training figures."""
    folders = {"baseline": Path(args.peer_model), "ours": Path(args.ours_model)}

    def measure(side: str, k: int) -> Dict[str, float]:
        rest = train_rest(side, paths, folders[side], args.model_updates, checkpoint_interval=200)
        run = session.run(side, k, tools.job(side, "train", rest, work / ("model-%s.log" % side)), "train a model")
        return {"speed": speed_of(side, "train", run.output), "rss": run.peak_rss_mb / 1024.0, "wall": run.wall_s,
                "ppl": min(harness.validation_perplexities(folders[side]))}
    results = session.alternate(measure)
    updates = args.model_updates
    session.figure_from("training speed (median of logged, %d updates)" % updates, "samples/s", True, results,
                        "speed")
    session.figure_from("training peak RSS (%d updates, a checkpoint every 200)" % updates, "GB", False, results,
                        "rss")
    session.figure_from("best validation perplexity (a checkpoint every 200 updates)", "", False, results, "ppl")
    session.figure_from("training process wall time", "s", False, results, "wall")


def train_part(session: Session, tools: Tools, paths: Dict[str, Path], work: Path, args: argparse.Namespace) -> None:
    updates = args.train_updates

    def out_of(side: str, k: int) -> Path:
        return work / ("train-%s-%d" % (side, k))

    def job(side: str, k: int) -> Job:
        shutil.rmtree(out_of(side, k), ignore_errors=True)
        return tools.job(side, "train", train_rest(side, paths, out_of(side, k), updates,
                                                   ours_extra=shlex.split(args.ours_train_args)),
                         work / ("train-%s-%d.log" % (side, k)))

    def values(side: str, k: int, run: harness.Run) -> Dict[str, float]:
        # one process: its own high-water mark; several (ours with --processes): the sampled sum over them
        rss = max(run.peak_rss_mb, run.peak_tree_rss_mb or 0.0)
        result = {"speed": speed_of(side, "train", run.output), "rss": rss / 1024.0,
                  "ppl": harness.validation_perplexity(out_of(side, k)), "wall": run.wall_s,
                  "cpu": run.user_s + run.sys_s}
        shutil.rmtree(out_of(side, k), ignore_errors=True)
        return result

    if args.simultaneous:
        results: Dict[str, List[Dict[str, float]]] = {"baseline": [], "ours": []}
        for k in range(args.rounds):
            jobs = [job(side, k) for side in harness.SIDES]
            runs = harness.run_together(jobs)
            for side, job_, run in zip(harness.SIDES, jobs, runs):
                session._note_command(side, job_)
                session._note_run(side, k, run, "train, simultaneous")
                results[side].append(values(side, k, run))
        session.notes.append("both tools trained at the same time in each round (--simultaneous)")
    else:
        results = session.alternate(lambda side, k: values(side, k, session.run(side, k, job(side, k), "train",
                                                                                sample_tree=True)))
    session.figure_from("training speed (median of logged, %d updates)" % updates, "samples/s", True, results,
                        "speed")
    session.figure_from("training peak RSS (all processes)", "GB", False, results, "rss")
    session.figure_from("validation perplexity after %d updates" % updates, "", False, results, "ppl")
    session.figure_from("training process wall time (start-up included)", "s", False, results, "wall")
    session.figure_from("training process CPU time (user + sys)", "s", False, results, "cpu")


def dev_listing(paths: Dict[str, Path], work: Path, images: Optional[int]) -> List[str]:
    return paths["dev_list"].read_text().splitlines()[:images or None]


def caption_part(session: Session, tools: Tools, paths: Dict[str, Path], work: Path,
                 args: argparse.Namespace) -> None:
    names = dev_listing(paths, work, args.caption_images)
    listing = work / ("dev-first-%d.features" % len(names))
    listing.write_text("".join(n + "\n" for n in names))
    for batch in args.batch_sizes:
        def measure(side: str, k: int, batch: int = batch) -> Dict[str, float]:
            output = work / ("captions-%s-b%d-%d" % (side, batch, k))
            run = session.run(side, k, tools.job(side, "captioner",
                                                 caption_rest(side, args, listing, paths["feats"], output, batch),
                                                 work / ("caption-%s-b%d-%d.log" % (side, batch, k))),
                              "caption batch %d" % batch)
            return {"speed": speed_of(side, "captioner", run.output), "rss": run.peak_rss_mb / 1024.0,
                    "words": words_per_caption(output)}
        results = session.alternate(measure)
        what = "beam %d, batch %d, max length %d" % (args.beam_size, batch, args.max_output_length)
        session.figure_from("captioning speed, %s" % what, "captions/s", True, results, "speed")
        session.figure_from("captioning peak RSS, batch %d" % batch, "GB", False, results, "rss")
        session.figure_from("words per caption, batch %d" % batch, "words", True, results, "words",
                            note="not a speed: a batch costs as many steps as its longest caption")


def processes_part(session: Session, tools: Tools, paths: Dict[str, Path], work: Path,
                   args: argparse.Namespace) -> None:
    n = args.processes
    per = str(max(1, int(tools.threads) // n))
    names = dev_listing(paths, work, args.caption_images)
    listing = work / ("dev-first-%d.features" % len(names))
    listing.write_text("".join(name + "\n" for name in names))
    parts = []
    for i in range(n):
        part = work / ("dev-part-%d-of-%d.features" % (i + 1, n))
        part.write_text("".join(name + "\n" for name in names[i::n]))
        parts.append(part)
    for batch in args.batch_sizes:
        def measure(side: str, k: int, batch: int = batch) -> Dict[str, float]:
            if side == "ours":
                rest = caption_rest(side, args, listing, paths["feats"], work / ("captions-processes-ours-%d-%d"
                                                                                  % (batch, k)), batch)
                run = session.run(side, k, tools.job(side, "captioner", rest + ["--search-processes", str(n)],
                                                     work / ("caption-processes-ours-%d-%d.log" % (batch, k))),
                                  "caption, %d processes" % n, sample_tree=True)
                return {"speed": speed_of(side, "captioner", run.output), "rss": run.peak_tree_rss_mb / 1024.0}
            jobs = [tools.job(side, "captioner",
                              caption_rest(side, args, part, paths["feats"],
                                           work / ("captions-processes-original-%d-%d-%d" % (batch, k, i)), batch),
                              work / ("caption-processes-original-%d-%d-%d.log" % (batch, k, i)), threads=per)
                    for i, part in enumerate(parts)]
            runs = session.run_together(side, k, jobs, "caption, %d processes" % n, sample_tree=True)
            times = []
            for run in runs:
                match = PEER_CAPTION_TIME.search(run.output)
                if match is None:
                    raise harness.BenchmarkError("original: no time line in its log:\n%s" % run.output[-2000:])
                times.append(float(match.group(2)))
            return {"speed": len(names) / max(times), "rss": sum(r.peak_tree_rss_mb for r in runs) / 1024.0}
        results = session.alternate(measure)
        session.figure_from("captioning speed, %d processes x %s thread(s), batch %d" % (n, per, batch),
                            "captions/s", True, results, "speed")
        session.figure_from("peak RSS of all processes, batch %d" % batch, "GB", False, results, "rss")


def extract_part(session: Session, tools: Tools, paths: Dict[str, Path], work: Path,
                 args: argparse.Namespace) -> None:
    images = paths["data"] / ("%s.images" % args.extract_split)
    count = len([line for line in images.read_text().splitlines() if line.strip()])

    def measure(side: str, k: int) -> Dict[str, float]:
        out = work / ("extract-%s-%d" % (side, k))
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        run = session.run(side, k, tools.job(side, "extract_features", extract_rest(paths, images, out),
                                             work / ("extract-%s-%d.log" % (side, k))), "extract", sample_tree=True)
        shutil.rmtree(out, ignore_errors=True)
        return {"wall": run.wall_s, "rss": run.peak_tree_rss_mb / 1024.0, "rate": count / run.wall_s}

    results = session.alternate(measure)
    session.figure_from("extraction, %d %s photos, batch 32 (CNN loading included)" % (count, args.extract_split),
                        "images/s", True, results, "rate")
    session.figure_from("extraction peak RSS (process and decode workers)", "GB", False, results, "rss")


def missing(args: argparse.Namespace, paths: Dict[str, Path]) -> Optional[str]:
    """Why the benchmark cannot run here (said, exit 0), or None."""
    peer = Path(args.peer)
    if not (peer / "sk.py").is_file() or not (peer / "venv" / "bin" / "python").exists():
        return "no original Sockeye at %s (run its setup.sh %s)" % (peer, peer)
    if not paths["data"].is_dir() or not Path(str(paths["cnn"]) + "-symbol.json").exists():
        return "no %s or %s" % (paths["data"], paths["cnn"])
    if set(args.parts) & {"models", "train", "caption", "processes"} and \
            any(not paths[k].exists() for k in ("feats", "train_list", "train_captions", "dev_list")):
        return ("no FLICKR-A features in %s (python -m benchmarks.train --cache-dir %s --speed-updates 0 "
                "--skip-quality extracts them)" % (args.bench, args.bench))
    if set(args.parts) & {"caption", "processes"} and "models" not in args.parts:
        for model in (args.peer_model, args.ours_model):
            trained = (Path(model) / "params.best").exists() or list(Path(model).glob("params.0*"))
            if not trained and not (Path(model) / "manifest.json").exists():     # manifest: an export (ours)
                return "no trained model in %s (train one with each tool's flags first)" % model
    return None


def main(argv: Optional[Sequence[str]] = None) -> None:
    harness.setup_logging()
    args = parse_args(argv)
    paths = flickr_paths(Path(args.shared), Path(args.bench))
    reason = missing(args, paths)
    if reason:
        print("skipped: %s" % reason)
        return
    if "models" in args.parts:
        for folder in (args.peer_model, args.ours_model):
            if Path(folder).exists():
                raise harness.BenchmarkError("%s exists: the models part trains into new folders (--peer-model, "
                                             "--ours-model)" % folder)
    run_part = {"models": models_part, "train": train_part, "caption": caption_part, "processes": processes_part,
                "extract": extract_part}
    # the models are trained once (at the first thread count), before the parts that caption with them
    todo = [("models", args.threads[0])] if "models" in args.parts else []
    todo += [(part, threads) for threads in args.threads for part in PARTS if part in args.parts and part != "models"]
    for part, threads in todo:
        tools = Tools(Path(args.peer), Path(args.ours), threads)
        work = Path(args.work_dir) / ("%s-t%s" % (part, threads))
        work.mkdir(parents=True, exist_ok=True)
        session = Session(
            benchmark="peer-%s-t%s%s" % (part, threads, "-" + args.record_suffix if args.record_suffix else ""),
            reproduce=harness.reproduce_command("benchmarks.peer", args.argv),
            description="%s: this project against the original Sockeye 1.18.115, OMP_NUM_THREADS=%s" % (
                part, threads),
            baseline="original Sockeye 1.18.115", threads=threads, ours_tree=Path(args.ours),
            rounds=1 if part == "models" else args.rounds, settle_s=args.settle, results_dir=Path(args.results_dir),
            baseline_python=tools.python["baseline"])
        run_part[part](session, tools, paths, work, args)
        session.finish()

if __name__ == "__main__":
    try:
        main()
    except harness.BenchmarkError as e:
        sys.exit("benchmarks.peer: %s" % e)
