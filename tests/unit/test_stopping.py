"""Stop signals: raised at once outside a save, deferred to its end inside one."""
import os
import signal

import pytest

from apot.engine.stopping import StopOnSignals, Stopped


def test_a_signal_outside_a_save_stops_at_once():
    stop = StopOnSignals()
    reached = []
    with pytest.raises(Stopped) as info, stop.active():
        os.kill(os.getpid(), signal.SIGTERM)
        reached.append("after the signal")
    assert info.value.signum == signal.SIGTERM and reached == []
    assert str(info.value) == "stopped by SIGTERM"


def test_a_signal_inside_a_save_stops_after_it():
    stop = StopOnSignals()
    reached = []
    with pytest.raises(Stopped) as info, stop.active():
        with stop.atomic():
            os.kill(os.getpid(), signal.SIGINT)
            reached.append("rest of the save")
        reached.append("after the save")
    assert info.value.signum == signal.SIGINT and reached == ["rest of the save"]


def test_handlers_are_restored_and_a_quiet_save_raises_nothing():
    before = signal.getsignal(signal.SIGTERM)
    stop = StopOnSignals()
    with stop.active():
        assert signal.getsignal(signal.SIGTERM) != before
        with stop.atomic():
            pass
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_forked_child_ends_the_usual_way():
    """Data-loading workers are forked inside a run: they must not raise Stopped themselves."""
    stop = StopOnSignals()
    with stop.active():
        pid = os.fork()
        if pid == 0:  # the child: the inherited handler must end it with the signal
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                os._exit(0)  # not reached
            except BaseException:
                os._exit(3)
        _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
