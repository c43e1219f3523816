"""The bad-input campaign (python -m bench.reliability) still measures what docs/RELIABILITY.md
says it does: a few of its cases run through its own functions, so the script cannot rot unseen."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import reliability as campaign
from bench.reliability import Case, Material, Settings

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Material, Settings]:
    """A campaign folder without material: these cases need none (nothing built, nothing watched)."""
    root = tmp_path / "campaign"
    (root / "tmp").mkdir(parents=True)
    material = Material(root, root / "no-data", root / "no-data", root / "no-run", root / "no-lora" / "best",
                        root / "no-onnx", root / "no-image.png")
    return material, Settings(root, campaign.child_env(root), timeout=20, memory_cap_mb=4096, keep=False)


def outcome(case: Case, setup: tuple[Material, Settings], index: int = 0, baseline_mb: float | None = None) -> dict:
    row = campaign.run_case(index, case, *setup)
    row["outcome"] = campaign.judge(row, baseline_mb)
    return row


def test_a_usage_error_of_a_real_command_is_refused_in_one_line(setup):
    row = outcome(Case("--batch-size abc", "train.py", ["--batch-size", "abc"]), setup)
    assert row["outcome"] == campaign.REFUSED and row["exit"] == 2 and not row["traceback"]
    assert "--batch-size" in row["first_line"] and row["stderr_lines"] == 1
    sampled = outcome(Case("--steps 0", "generate_t2i.py", ["a red circle", "--steps", "0"]), setup, 1)
    assert sampled["outcome"] == campaign.REFUSED and "--steps" in sampled["first_line"]


@pytest.mark.parametrize("code, expected", [
    ("import os; os.remove('{case}/precious.txt')", campaign.LOST),  # its input vanished
    ("open('{case}/precious.txt', 'w').write('changed')", campaign.LOST),
    ("raise ValueError('a bug')", campaign.TRACED),
    ("import time; time.sleep(60)", campaign.HANG),
    ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", campaign.CRASHED),
    ("print('ok')", campaign.ACCEPTED),  # exit 0 where a refusal was expected
    ("import sys; sys.exit('\\n'.join(['a long complaint'] * 8))", campaign.LONG),
    ("import sys; sys.exit('one clear line')", campaign.REFUSED),
])
def test_each_way_a_command_can_fail_is_told_apart(setup, code, expected):
    case = Case(expected, "", ["-c", code], watch=("{case}/precious.txt",),
                prepare=campaign.made(lambda folder: (folder / "precious.txt").write_text("a user's file")),
                timeout=1 if expected == campaign.HANG else None)
    row = outcome(case, setup)
    assert row["outcome"] == expected, row


def test_peak_memory_is_the_process_own_and_past_the_margin_is_a_failure(setup):
    """Even when the campaign itself is large (pytest after many tests), which Linux would
    otherwise count in the peak of every process it starts."""
    campaign_itself = bytearray(1500 << 20)
    campaign_itself[::4096] = b"1" * len(campaign_itself[::4096])
    case = Case("takes 600 MB", "", ["-c", "x = bytearray(600 << 20); x[::4096] = b'1' * len(x[::4096])"],
                expect=campaign.HANDLE)
    row = outcome(case, setup)
    del campaign_itself
    assert 600 <= row["peak_mb"] < 1000 and row["outcome"] == campaign.HANDLED
    assert campaign.judge(row, baseline_mb=row["peak_mb"] - campaign.MEMORY_MARGIN_MB - 100) == campaign.MEMORY


def test_the_report_counts_each_surface_and_lists_what_was_not_clean(setup):
    rows = [outcome(Case("refused", "", ["-c", "import sys; sys.exit('no')"]), setup, 0),
            outcome(Case("broken", "", ["-c", "raise KeyError('oops')"]), setup, 1)]
    rows += [dict(rows[0], name="good", baseline=True, expect=campaign.HANDLE, exit=0, outcome=campaign.HANDLED)]
    for row in rows:
        row["surface"] = "train.py"
    table = campaign.markdown(rows, [], {"train.py": rows[-1]["peak_mb"]}, seconds=60)
    assert "| train.py | 2 | 1 | 0 | 1 | 0 | 0 | 0 |" in table
    assert "**traceback** · train.py · broken" in table and "KeyError: 'oops'" in table


def test_the_campaign_tries_at_least_100_bad_inputs_on_every_surface():
    cases, pages = campaign.all_cases(), campaign.page_cases()
    bad = [case for case in cases + pages if not case.baseline]
    assert len(bad) >= 100
    assert {case.surface for case in bad} == set(campaign.SURFACES)
    names = [(case.surface, case.name) for case in cases + pages]
    assert len(names) == len(set(names))  # a row of the JSON is found by its name
    assert all(case.expect in (campaign.REFUSE, campaign.HANDLE, campaign.EITHER) for case in cases + pages)


def test_steps_done_are_read_from_the_progress_bar():
    shown = "epoch 1/2 · encoders:  30%|███       | 3/10 [00:00<00:00]\repoch 2/2 · diffusion:  70%|███| 7/10 [00"
    assert campaign.steps_done(shown) == 17
