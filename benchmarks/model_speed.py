"""Training speed of the networks: forward + backward + Adam update, in captions (samples) per second.

Default: the tutorial model (1-layer LSTM-512, MLP attention, image projection 512 on 1280x7x7 features plus the
global descriptor, embedding 512, vocabulary 2,800, weight normalisation, batch 64, caption length 13), with input
feeding on and off. Random features and captions; prints the median of ``--repeats`` timings of ``--updates``
updates each (other work on the machine makes single timings noisy). Besides wall-clock samples/s it prints samples
per OMP_NUM_THREADS CPU-seconds of this process: what the wall-clock rate would be if the process had its threads'
cores to itself (an estimate for a shared machine; OpenMP spin-waiting makes it err low).

    OMP_NUM_THREADS=2 python benchmarks/model_speed.py
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import captioning  # noqa: E402,F401  (sets OMP_NUM_THREADS before MXNet is imported)
import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from mxnet import autograd, gluon  # noqa: E402

from captioning.decoder import (ConvolutionalDecoderConfig, RecurrentDecoderConfig,  # noqa: E402
                                TransformerDecoderConfig)
from captioning.encoder import ImageEncoderConfig  # noqa: E402
from captioning.model import CaptionModel, ModelConfig  # noqa: E402


def tutorial_config(args: argparse.Namespace, input_feeding: bool) -> ModelConfig:
    encoder = ImageEncoderConfig(feature_shape=(args.channels, args.grid, args.grid), num_hidden=args.hidden,
                                 positional_embedding="learned", global_descriptor=True)
    kwargs = {}
    if args.decoder == "rnn":
        kwargs["rnn"] = RecurrentDecoderConfig(num_hidden=args.hidden, cell_type=args.cell_type,
                                               state_init="zero", attention_type=args.attention_type,
                                               input_feeding=input_feeding, hidden_dropout=0.2)
    elif args.decoder == "transformer":
        kwargs["transformer"] = TransformerDecoderConfig(model_size=args.hidden, num_layers=args.layers)
    else:
        kwargs["cnn"] = ConvolutionalDecoderConfig(num_hidden=args.hidden, num_layers=args.layers)
    return ModelConfig(encoder=encoder, vocab_size=args.vocab, decoder=args.decoder, num_embed=args.hidden,
                       weight_normalization=True, **kwargs)


def measure(args: argparse.Namespace, input_feeding: bool) -> list:
    mx.random.seed(1)
    np.random.seed(1)
    ctx = mx.gpu(0) if args.context == "gpu" else mx.cpu()
    model = CaptionModel(tutorial_config(args, input_feeding))
    model.initialize(mx.init.Xavier(magnitude=3.0), ctx=ctx)
    model.hybridize()
    trainer = gluon.Trainer(model.collect_params(), "adam", {"learning_rate": 2e-4})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    batches = [(mx.nd.random.uniform(0, 6, (args.batch_size, args.channels, args.grid, args.grid), ctx=ctx),
                mx.nd.array(np.random.randint(0, args.vocab, (args.batch_size, args.seq_len)), ctx=ctx),
                mx.nd.array(np.random.randint(0, args.vocab, (args.batch_size, args.seq_len)), ctx=ctx))
               for _ in range(4)]

    def update(i: int) -> None:
        features, target_input, labels = batches[i % len(batches)]
        with autograd.record():
            loss = loss_fn(model(features, target_input), labels).mean()
        loss.backward()
        trainer.step(1)

    for i in range(args.warmup):
        update(i)
    mx.nd.waitall()
    rates, cpu_rates = [], []
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    for _ in range(args.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        for i in range(args.updates):
            update(i)
        mx.nd.waitall()
        samples = args.updates * args.batch_size
        rates.append(samples / (time.perf_counter() - start))
        cpu_rates.append(samples / ((time.process_time() - cpu_start) / threads))
    return rates, cpu_rates


def threads_of() -> int:
    return int(os.environ.get("OMP_NUM_THREADS", "1"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decoder", choices=["rnn", "transformer", "cnn"], default="rnn")
    parser.add_argument("--cell-type", default="lstm")
    parser.add_argument("--attention-type", default="mlp")
    parser.add_argument("--layers", type=int, default=1, help="Layers (transformer, cnn).")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=13)
    parser.add_argument("--vocab", type=int, default=2800)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--channels", type=int, default=1280)
    parser.add_argument("--grid", type=int, default=7)
    parser.add_argument("--updates", type=int, default=10, help="Updates per timing.")
    parser.add_argument("--repeats", type=int, default=5, help="Timings; the median is reported.")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--input-feeding", choices=["on", "off", "both"], default="both")
    parser.add_argument("--context", choices=["cpu", "gpu"], default="cpu", help="gpu: gpu(0) (benchmarks/gpu.sh)")
    args = parser.parse_args()
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.input_feeding]
    if args.decoder != "rnn":
        modes = [True]
    print("OMP_NUM_THREADS=%s decoder=%s batch=%d seq_len=%d vocab=%d hidden=%d features=%dx%dx%d"
          % (os.environ.get("OMP_NUM_THREADS"), args.decoder, args.batch_size, args.seq_len, args.vocab,
             args.hidden, args.channels, args.grid, args.grid))
    for feeding in modes:
        rates, cpu_rates = measure(args, feeding)
        label = ("input feeding %s" % ("on" if feeding else "off")) if args.decoder == "rnn" else args.decoder
        print("%-18s median %.1f samples/s wall (min %.1f, max %.1f over %d x %d updates); %.1f samples per "
              "%d CPU-seconds" % (label, statistics.median(rates), min(rates), max(rates), args.repeats,
                                  args.updates, statistics.median(cpu_rates), threads_of()))


if __name__ == "__main__":
    main()
