"""world2act.utils.progress.progress_bar: tqdm on a terminal, a few plain lines in a log file."""
import gc
import io

from tqdm import tqdm

from world2act.utils.progress import progress_bar


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def _lines(text):
    return [ln for ln in text.split("\n") if ln]


def test_off_terminal_few_plain_lines():
    for extra in ({}, {"mininterval": 0, "miniters": 1}):  # tqdm's rate limits, then a refresh every step
        buf = io.StringIO()
        for _ in progress_bar(range(1000), desc="steps", file=buf, **extra):
            pass
        out = buf.getvalue()
        lines = _lines(out)
        assert "\r" not in out and "\x1b" not in out and out.endswith("\n")
        assert 2 <= len(lines) < 40, lines
        assert lines[0].startswith("steps:") and "0/1000" in lines[0]
        assert "1000/1000" in lines[-1] and sum("1000/1000" in ln for ln in lines) == 1
    assert 20 <= len(lines) <= 22  # every 5 %: 0, 5, ..., 100


def test_off_terminal_update_postfix_leave_false_and_disable():
    buf = io.StringIO()
    bar = progress_bar(total=200, desc="train", unit="step", initial=50, leave=False, file=buf,
                       mininterval=0, miniters=1, dynamic_ncols=True)
    for i in range(150):
        bar.update(1)
        bar.set_postfix(loss=f"{1 / (i + 1):.3f}")
    bar.close()
    bar.close()  # closing twice writes nothing more
    out = buf.getvalue()
    lines = _lines(out)
    assert "\r" not in out and len(lines) < 40
    assert "50/200" in lines[0] and "200/200" in lines[-1] and "loss=0.007" in lines[-1]
    assert all(ln.startswith("train:") for ln in lines)

    # an early break still leaves a final line, also with leave=False
    buf = io.StringIO()
    for i in progress_bar(range(1000), desc="x", file=buf, leave=False):
        if i == 300:
            break
    gc.collect()  # tqdm closes the bar when its iterator is finalised
    out = buf.getvalue()
    assert "\r" not in out and "300/1000" in _lines(out)[-1]

    buf = io.StringIO()
    for _ in progress_bar(range(10), desc="off", file=buf, disable=True):
        pass
    assert buf.getvalue() == ""


def test_off_terminal_time_rule_without_total(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("tqdm.std.time", lambda: clock[0])
    buf = io.StringIO()
    bar = progress_bar(desc="clips", file=buf, mininterval=0, miniters=1, every_s=60)
    for _ in range(100):
        clock[0] += 10.0  # 10 s per item, no total: a line every 60 s
        bar.update(1)
    bar.close()
    lines = _lines(buf.getvalue())
    assert 15 <= len(lines) <= 19 and "100" in lines[-1]


def test_on_terminal_it_is_tqdm():
    tty = FakeTTY()
    bar = progress_bar(range(1000), desc="steps", file=tty, mininterval=0, miniters=1)
    assert type(bar) is tqdm
    for _ in bar:
        pass
    out = tty.getvalue()
    assert out.count("\r") > 100 and "1000/1000" in out
