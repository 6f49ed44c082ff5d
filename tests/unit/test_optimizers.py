import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon

from captioning import optimizers as O


def test_kwargs_flags_and_params():
    cfg = O.OptimizerConfig(name="sgd", learning_rate=0.1, weight_decay=0.01, momentum=0.9, clip_type="abs",
                            clip_threshold=2.0, params={"momentum": 0.5})
    kw = O.optimizer_kwargs(cfg)
    assert kw == {"learning_rate": 0.1, "wd": 0.01, "momentum": 0.5, "clip_gradient": 2.0}
    assert "clip_gradient" not in O.optimizer_kwargs(cfg.copy(clip_type="norm"))
    assert "clip_gradient" not in O.optimizer_kwargs(cfg.copy(clip_threshold=0.0))
    assert "momentum" not in O.optimizer_kwargs(O.OptimizerConfig(name="adam", momentum=0.9))


def test_create_optimizer_and_bad_params():
    opt = O.create_optimizer(O.OptimizerConfig(name="adam", learning_rate=0.001, params={"beta1": 0.8}))
    assert isinstance(opt, mx.optimizer.Adam)
    assert opt.beta1 == 0.8 and opt.lr == 0.001
    with pytest.raises(ValueError, match="--optimizer-params"):
        O.create_optimizer(O.OptimizerConfig(name="adam", params={"no_such_thing": 1}))


def test_abs_clipping_really_limits_each_update():
    p = gluon.Parameter("w", shape=(3,))
    p.initialize(mx.init.Zero())
    trainer = gluon.Trainer([p], O.create_optimizer(O.OptimizerConfig(name="sgd", learning_rate=1.0,
                                                                     clip_threshold=0.5)))
    with mx.autograd.record():
        loss = (p.data() * mx.nd.array([10.0, -0.1, -7.0])).sum()
    loss.backward()
    trainer.step(1)
    np.testing.assert_allclose(p.data().asnumpy(), [-0.5, 0.1, 0.5], rtol=1e-6)


def test_clip_global_norm():
    grads = [mx.nd.array([3.0, 0.0]), mx.nd.array([4.0])]
    norm = O.clip_global_norm(grads, 1.0)
    assert norm == pytest.approx(5.0)
    np.testing.assert_allclose(np.concatenate([g.asnumpy() for g in grads]), [0.6, 0.0, 0.8], rtol=1e-6)
    grads = [mx.nd.array([0.3, 0.4])]
    O.clip_global_norm(grads, 1.0)
    np.testing.assert_allclose(grads[0].asnumpy(), [0.3, 0.4])
