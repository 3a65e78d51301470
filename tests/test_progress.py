"""hookedmlp.progress.JobProgress: a bar with an ETA on a terminal, status lines elsewhere, erased at the end."""

import io
import re
import time

from hookedmlp.progress import JobProgress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def screen(raw: str) -> list[str]:
    """What a terminal shows after ``raw`` (carriage returns and newlines only, as one tqdm bar writes)."""
    lines, col = [""], 0
    for part in re.split(r"(\r|\n)", raw):
        if part == "\r":
            col = 0
        elif part == "\n":
            lines.append("")
            col = 0
        else:
            line = lines[-1]
            lines[-1] = line[:col] + part + line[col + len(part) :]
            col += len(part)
    return [line.rstrip() for line in lines]


def test_screen_overwrites_like_a_terminal() -> None:
    assert screen("abc\rx\nnext\r    \r") == ["xbc", ""]


def test_the_bar_shows_at_once_then_share_eta_and_step(capsys) -> None:
    term = Terminal()
    job = JobProgress("hookedmlp reproduce", "importing torch", stream=term)
    assert screen(term.getvalue())[-1].startswith("hookedmlp reproduce:   0%|")
    assert screen(term.getvalue())[-1].endswith("elapsed, about ? left, importing torch")
    job.start -= 10  # as if 10 s had gone by: a quarter done in 10 s leaves about 30 s
    job._bar.start_t -= 10
    job.update(25, 100, "spread: run 3 of 55")
    shown = screen(term.getvalue())[-1]
    assert re.fullmatch(r"hookedmlp reproduce:  25%\|.*\| 00:10 elapsed, about 00:30 left, spread: run 3 of 55", shown)
    job.log(print)("run 2/55: done")
    assert capsys.readouterr().out == "run 2/55: done\n"
    job.close()
    job.close()
    assert screen(term.getvalue())[-1] == ""  # erased: the job's last line stays the last line


def test_without_a_terminal_a_status_line_at_the_first_update_then_every_few_seconds() -> None:
    out = io.StringIO()
    job = JobProgress("job", "starting", stream=out, every=3600)
    assert out.getvalue() == ""  # nothing before the job itself reports (a failed start stays one line)
    job.update(0, 4, "step 1")
    job.update(1, 4, "step 2")  # within the hour: no line
    job.start = time.monotonic() - 90
    job.update(4, 4, "done")  # the end always prints
    assert out.getvalue().splitlines() == [
        "job: 0% after 00:00, about ? left: step 1",
        "job: 100% after 01:30, about 00:00 left: done",
    ]
    assert job.log(print) is print  # no bar to keep clear


def test_update_never_goes_past_the_total() -> None:
    job = JobProgress("job", stream=io.StringIO())
    job.update(7, 5, "over")
    assert (job.done, job.total) == (5.0, 5.0)
