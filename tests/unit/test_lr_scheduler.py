import pytest

from captioning import lr_scheduler as S


def make(**kw):
    return S.create_scheduler(S.SchedulerConfig(base_rate=1.0, **kw))


def test_none_with_warmup():
    s = make(type="none", warmup=4)
    assert [s.learning_rate(t) for t in (1, 2, 4, 100)] == [0.25, 0.5, 1.0, 1.0]


def test_plateau_reduce_and_state():
    s = make(type="plateau-reduce", reduce_factor=0.5, reduce_num_not_improved=2)
    assert s.new_evaluation_result(False) is False
    assert s.new_evaluation_result(True) is False      # counter reset
    assert s.new_evaluation_result(False) is False
    assert s.new_evaluation_result(False) is True
    assert s.learning_rate(10) == 0.5
    state = s.state_dict()
    s2 = make(type="plateau-reduce", reduce_factor=0.5, reduce_num_not_improved=2)
    s2.load_state_dict(state)
    assert s2.learning_rate(10) == 0.5
    s2.new_evaluation_result(False)
    assert s2.new_evaluation_result(False) is True
    assert s2.learning_rate(10) == 0.25


def test_fixed_step():
    s = make(type="fixed-step", schedule=S.parse_schedule("0.3:10,0.1:5"))
    assert [s.learning_rate(t) for t in (1, 10, 11, 15, 16, 1000)] == [0.3, 0.3, 0.1, 0.1, 0.1, 0.1]
    with pytest.raises(ValueError, match="RATE:UPDATES"):
        S.parse_schedule("0.3-10")
    with pytest.raises(ValueError, match="needs --learning-rate-schedule"):
        make(type="fixed-step")


def test_inverse_schedules_halve_at_half_life():
    s = make(type="fixed-rate-inv-sqrt-t", half_life=2, checkpoint_interval=50)
    assert s.learning_rate(100) == pytest.approx(0.5)
    s = make(type="fixed-rate-inv-t", half_life=2, checkpoint_interval=50)
    assert s.learning_rate(100) == pytest.approx(0.5)
    assert s.learning_rate(0) == pytest.approx(1.0)
