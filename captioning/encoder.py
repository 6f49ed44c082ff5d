"""The image encoder: pre-extracted CNN feature maps -> a sequence of positions for the decoder to attend over.

``(B, C, H, W)`` features become ``(B, L, d)`` with ``L = H*W`` positions in row-major order, plus one more
(the mean of all positions, a "global descriptor") when enabled. Each position is projected to ``d`` with a ReLU,
a positional embedding is added (none; fixed: 2-D sinusoids, half the channels for the row and half for the
column; learned: one vector per grid position), then dropout.
"""
from dataclasses import dataclass
from typing import Tuple

from mxnet import gluon

from . import constants as C
from .config import Config
from . import layers


@dataclass
class ImageEncoderConfig(Config):
    """Flags: ``--image-encoder-num-hidden`` (num_hidden), ``--image-positional-embedding-type``
    (positional_embedding), ``--image-encoder-global-descriptor`` (global_descriptor), ``--image-encoder-dropout``
    (dropout). ``feature_shape`` comes from the feature folder's sidecar."""
    feature_shape: Tuple[int, int, int]     # (C, H, W) of the cached CNN layer
    num_hidden: int                         # d: the size every position is projected to
    positional_embedding: str = C.POSITIONAL_NONE      # none | fixed | learned
    global_descriptor: bool = False         # append the mean of all positions as one more (last) position
    dropout: float = 0.0

    @property
    def num_grid_positions(self) -> int:
        """H*W: the feature-map positions (without the global descriptor)."""
        return int(self.feature_shape[1]) * int(self.feature_shape[2])

    @property
    def num_positions(self) -> int:
        """L: the positions a decoder attends over (H*W, +1 with the global descriptor)."""
        return self.num_grid_positions + (1 if self.global_descriptor else 0)


class ImageEncoder(gluon.HybridBlock):
    """(B, C, H, W) CNN features -> (B, H*W [+1], d) positions for the decoder to attend over."""

    def __init__(self, config: ImageEncoderConfig, prefix: str = "encoder_") -> None:
        super().__init__(prefix=prefix)
        self.config = config
        channels = int(config.feature_shape[0])
        with self.name_scope():
            self.projection = gluon.nn.Dense(config.num_hidden, flatten=False, in_units=channels,
                                             prefix="projection_")
            self.positions = layers.PositionalEmbedding(config.positional_embedding, config.num_hidden,
                                                        config.num_grid_positions,
                                                        grid=(int(config.feature_shape[1]),
                                                              int(config.feature_shape[2])), prefix="pos_")

    def hybrid_forward(self, F, features):
        # (B, C, H, W) -> (B, C, H*W) -> (B, H*W, C): one row per position, row-major over the grid
        x = F.transpose(F.reshape(features, shape=(0, 0, -1)), axes=(0, 2, 1))
        x = F.relu(self.projection(x))
        x = self.positions.add_to_sequence(F, x, self.config.num_grid_positions)
        if self.config.global_descriptor:
            descriptor = layers.mean_positions(F, x)
            x = F.concat(x, descriptor, dim=1)
        if self.config.dropout > 0.0:
            x = F.Dropout(x, p=self.config.dropout)
        return x
