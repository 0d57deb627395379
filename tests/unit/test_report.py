"""The checklist and JSON rendered from a Report built by hand: exact text, no server."""

from __future__ import annotations

import json

from restore_tool import smoke
from restore_tool.pipeline import Report, Status, StepName, StepResult
from restore_tool.report import render, to_json
from restore_tool.sequences.plan import Action, SequenceFix
from restore_tool.smoke import SmokeResult, Verdict

FIXES = (
    SequenceFix("public.user_user_id_seq", "user.user_id", ('public."user".user_id',),
                Action.FIXED, "max", 17, 1, 18, applied=True),
    SequenceFix("public.hub_hub_id_seq", "hub.hub_id", ("public.hub.hub_id",), Action.OK,
                "max", 3, 41, 41),
    SequenceFix("public.tiny_seq", "tiny.id", ("public.tiny.id",), Action.FAILED, "max", 150,
                1, None, reason="cannot get past its data: max is 150 but MAXVALUE is 100"),
)
REPORT = Report("fix-sequences", "postgresql://beppp:***@localhost:5432/beppp_test",
                "DATABASE_URL in .env",
                (StepResult(StepName.REPAIR_SEQUENCES, Status.FAILED, 0.0412,
                            "fixed 1, 1 already fine, 0 skipped, 1 failed", FIXES),))


def test_render_is_the_runbook_and_a_checklist() -> None:
    assert render(REPORT) == """\
restore-tool fix-sequences
Target: postgresql://beppp:***@localhost:5432/beppp_test (from DATABASE_URL in .env)

🔧 Fixing all database sequences...

✅ Fixed user.user_id sequence (max: 17, next: 18)
❌ Failed tiny.id sequence: cannot get past its data: max is 150 but MAXVALUE is 100

⚠️  Fixed 1 sequence(s); 1 already fine, 1 failed.

Checklist:
  ❌ repair sequences  fixed 1, 1 already fine, 0 skipped, 1 failed  (0.04s)

Something failed: see the ❌ lines above.
"""


def test_json_carries_every_step_and_sequence() -> None:
    data = json.loads(to_json(REPORT))
    assert data["ok"] is False
    assert data["target"] == "postgresql://beppp:***@localhost:5432/beppp_test"
    (step,) = data["steps"]
    assert (step["name"], step["status"], step["seconds"]) == ("repair sequences", "failed",
                                                               0.041)
    assert [d["action"] for d in step["details"]] == ["fixed", "ok", "failed"]
    assert REPORT.exit_code == 1


def test_smoke_summary_and_body_name_failed_and_skipped_tables() -> None:
    results = [
        SmokeResult("invoice", Verdict.FAILED, 'duplicate key value violates unique constraint '
                    '"invoice_pkey" (Key (id)=(1) already exists.)'),
        SmokeResult("user", Verdict.PASSED, configured=True),
        SmokeResult("payment", Verdict.SKIPPED, 'new row for relation "payment" violates '
                    'check constraint "big"', attempts=3),
        SmokeResult("hub", Verdict.PASSED),
    ]
    outcome = smoke.outcome(results)
    assert outcome.status is Status.FAILED
    assert outcome.summary == (
        '1 failed (invoice: duplicate key value violates unique constraint "invoice_pkey" '
        "(Key (id)=(1) already exists.)), 2 passed, 1 skipped (payment: new row for relation "
        '"payment" violates check constraint "big")')
    step = StepResult(StepName.SMOKE_TEST, outcome.status, 0.2, outcome.summary, outcome.details)
    text = render(Report("verify", "postgresql:///app", "the test", (step,)))
    assert text.splitlines()[3:9] == [
        "🧪 Smoke test: one insert per table, each rolled back...",
        "",
        '❌ invoice: duplicate key value violates unique constraint "invoice_pkey" '
        "(Key (id)=(1) already exists.)",
        '⚠️  payment: skipped, new row for relation "payment" violates check constraint "big"',
        "✅ 2 table(s) took a rolled-back insert (1 configured row(s)).",
        "",
    ]
    assert smoke.outcome(results[1:2]).status is Status.PASSED
    assert smoke.outcome(results[2:]).status is Status.WARNING
    assert smoke.outcome([]).status is Status.SKIPPED
    details = json.loads(to_json(Report("verify", "t", "s", (step,))))["steps"][0]["details"]
    assert details[2] == {"table": "payment", "verdict": "skipped", "attempts": 3,
                          "configured": False, "reason": results[2].reason}
