"""`dmdesk bench` says when the stack fell behind the offered rate (its latencies then
measure a backlog): a slow machine's seconds must not read as a slow flow's."""

from dmdesk.bench import KEPT_UP, Sent, kept_up


def sent_every(step: float, count: int) -> Sent:
    return Sent(at={f"dm-{i}": i * step for i in range(count)})


def test_a_stack_that_keeps_up_queues_each_dm_as_it_comes() -> None:
    sent = sent_every(0.005, 4000)  # 200 a second for 20 s
    queued = {psid: at + 0.08 for psid, at in sent.at.items()}
    ratio = kept_up(sent, queued)
    assert ratio is not None
    assert ratio > KEPT_UP


def test_a_stack_falling_behind_builds_a_backlog() -> None:
    sent = sent_every(0.005, 4000)
    # It routes 150 a second: the last DM is queued about 7 s after it was sent.
    queued = {f"dm-{i}": i / 150 + 0.08 for i in range(4000)}
    ratio = kept_up(sent, queued)
    assert ratio is not None
    assert ratio < KEPT_UP
    assert round(ratio, 2) == round(20 / (4000 / 150), 2)


def test_dms_never_queued_are_left_out_and_too_few_say_nothing() -> None:
    sent = sent_every(0.005, 10)
    assert kept_up(sent, {"dm-0": 0.1}) is None
    assert kept_up(sent, {"dm-0": 0.1, "dm-9": 0.2}) is not None
