"""ImageEncoder: shapes, positional embeddings, global descriptor, hybridization."""
import mxnet as mx
import numpy as np
import pytest

from captioning.encoder import ImageEncoder, ImageEncoderConfig


def make_encoder(positional="learned", global_descriptor=True, dropout=0.0, seed=0):
    mx.random.seed(seed)
    config = ImageEncoderConfig(feature_shape=(6, 2, 3), num_hidden=16, positional_embedding=positional,
                                global_descriptor=global_descriptor, dropout=dropout)
    encoder = ImageEncoder(config)
    encoder.initialize(mx.init.Xavier())
    return encoder


@pytest.mark.parametrize("global_descriptor, length", [(True, 7), (False, 6)])
def test_output_shape_and_num_positions(global_descriptor, length):
    encoder = make_encoder(global_descriptor=global_descriptor)
    out = encoder(mx.nd.random.uniform(shape=(4, 6, 2, 3)))
    assert out.shape == (4, length, 16)
    assert encoder.config.num_positions == length


def test_global_descriptor_is_mean_of_grid_positions():
    encoder = make_encoder(global_descriptor=True)
    out = encoder(mx.nd.random.uniform(shape=(2, 6, 2, 3))).asnumpy()
    np.testing.assert_allclose(out[:, -1], out[:, :-1].mean(axis=1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("positional", ["fixed", "learned"])
def test_positions_make_rows_differ_for_identical_features(positional):
    # every grid position sees the same feature vector: without positions all rows are equal
    features = mx.nd.broadcast_to(mx.nd.random.uniform(shape=(1, 6, 1, 1)), shape=(1, 6, 2, 3))
    plain = make_encoder("none", global_descriptor=False)(features).asnumpy()[0]
    np.testing.assert_allclose(plain, np.repeat(plain[:1], 6, axis=0), rtol=1e-6)
    encoder = make_encoder(positional, global_descriptor=False)
    with_positions = encoder(features).asnumpy()[0]
    assert np.abs(with_positions - with_positions[:1]).max() > 1e-3


def test_fixed_positions_are_2d_sinusoids_added_to_projection():
    none_encoder = make_encoder("none", global_descriptor=False)
    fixed_encoder = make_encoder("fixed", global_descriptor=False)
    fixed_encoder.projection.weight.set_data(none_encoder.projection.weight.data())
    fixed_encoder.projection.bias.set_data(mx.nd.random.uniform(shape=(16,)))
    none_encoder.projection.bias.set_data(fixed_encoder.projection.bias.data())
    features = mx.nd.random.uniform(shape=(1, 6, 2, 3))
    difference = (fixed_encoder(features) - none_encoder(features)).asnumpy()[0]
    def sinusoids(values, dim):
        angles = values[:, None] * np.exp(-np.log(10000.0) * np.arange(dim // 2) / (dim // 2))[None, :]
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
    rows, columns = np.arange(6) // 3, np.arange(6) % 3     # the 2 x 3 grid, row-major
    expected = np.concatenate([sinusoids(rows, 8), sinusoids(columns, 8)], axis=1)
    np.testing.assert_allclose(difference, expected, rtol=1e-4, atol=1e-5)


def test_position_type_changes_output():
    features = mx.nd.random.uniform(shape=(2, 6, 2, 3))
    outputs = {kind: make_encoder(kind, seed=3)(features).asnumpy() for kind in ("none", "fixed", "learned")}
    assert np.abs(outputs["none"] - outputs["fixed"]).max() > 1e-2
    assert np.abs(outputs["none"] - outputs["learned"]).max() > 1e-4


def test_hybridized_equals_imperative_and_dropout_only_in_training():
    encoder = make_encoder(dropout=0.5)
    features = mx.nd.random.uniform(shape=(3, 6, 2, 3))
    imperative = encoder(features).asnumpy()
    encoder.hybridize()
    np.testing.assert_allclose(encoder(features).asnumpy(), imperative, rtol=1e-5, atol=1e-6)
    with mx.autograd.record(train_mode=True):
        dropped = encoder(features).asnumpy()
    assert (dropped == 0).mean() > 0.2


def test_row_major_positions():
    # a feature only at grid cell (row 1, column 0) shows up at position 1 * W + 0 = 3
    encoder = make_encoder("none", global_descriptor=False)
    encoder.projection.bias.set_data(mx.nd.zeros((16,)))
    encoder.projection.weight.set_data(mx.nd.ones((16, 6)))
    features = np.zeros((1, 6, 2, 3), dtype=np.float32)
    features[0, :, 1, 0] = 1.0
    out = encoder(mx.nd.array(features)).asnumpy()[0]
    assert out[3].sum() > 0 and np.delete(out, 3, axis=0).sum() == 0
