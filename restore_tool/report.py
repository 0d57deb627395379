"""Reports rendered for people (the checklist, in the runbook's words) and for scripts
(JSON). Pure functions: the CLI decides where the text goes."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from .pipeline import Report, Status, StepName, StepResult
from .sequences import count
from .sequences.plan import Action, SequenceFix

if TYPE_CHECKING:  # the bodies of steps that fix-sequences and verify do not run import theirs
    from .restoring.archive import Dump

ICONS = {Status.PASSED: "✅", Status.FAILED: "❌", Status.WARNING: "⚠️ ", Status.SKIPPED: "⏭️ "}


def render(report: Report, *, streamed: bool = False) -> str:
    """The terminal checklist. `streamed`: what comes after the checklist lines already
    printed as each step ended (render_head, step_line): the facts, the steps' bodies and
    the verdict."""
    lines = [] if streamed else render_head(report.command, report.target,
                                            report.target_source).splitlines()
    lines += [*(f"{name}: {value}" for name, value in report.facts), ""]
    if streamed and not report.facts:
        lines = []
    for step in report.steps:
        body = _STEP_BODIES.get(step.name)
        if body is not None and step.details:
            lines += [*body(step), ""]
    if not streamed:
        lines.append("Checklist:")
        width = max((len(step.name) for step in report.steps), default=0)
        lines += [step_line(step, width) for step in report.steps]
        lines.append("")
    lines.append("All checks passed." if report.ok else
                 "Something failed: see the ❌ lines above.")
    lines += [f"  → {hint}" for hint in report.next_steps]
    return "\n".join(lines) + "\n"


def render_head(command: str, target: str, origin: str) -> str:
    return f"restore-tool {command}\nTarget: {target} (from {origin})\n"


STEP_WIDTH = max(len(name) for name in StepName)


def step_line(step: StepResult, width: int = STEP_WIDTH) -> str:
    """`  ✅ load               loaded into shop  (1.20s)`."""
    return (f"  {ICONS[step.status]} {step.name:<{width}}  {step.summary}"
            f"  ({step.seconds:.2f}s)")


def render_dump(dump: Dump) -> str:
    """`restore-tool inspect`: what the dump is and who reads it."""
    counts = ", ".join(f"{n} {name}" for name, n in dump.counts.items())
    readers = ", ".join(f"{t.name} {t.version_text} ({t.path})"
                        for t in dump.readers)
    lines = [
        f"Dump:        {dump.path}",
        f"Format:      {dump.format}" + (f" (inside {dump.wrapper})" if dump.wrapper else ""),
        f"Compression: {dump.compression or dump.wrapper or 'none'}",
    ]
    if dump.archive_version:
        lines.append(f"Archive:     version {dump.archive_version}, {dump.toc_entries} TOC entries")
    lines += [
        f"pg_dump:     {dump.pg_dump_version or 'unknown'}",
        f"Source:      PostgreSQL {dump.server_version or 'unknown'}"
        + (f', database "{dump.dbname}"' if dump.dbname else ""),
        f"Contains:    {counts}",
        f"Owners:      {', '.join(dump.owners) or 'none named'}",
        f"Readable by: {readers}",
        "Restore uses: the reader of the target server's major, else the oldest newer one "
        "(--pg-bin pins)",
    ]
    return "\n".join(lines) + "\n"


def dump_json(dump: Dump) -> str:
    """`inspect --json`: the envelope of every report, the dump's facts under "dump"."""
    return json.dumps({"ok": True, "command": "inspect", "exit_code": 0,
                       "dump": dump.as_dict()}) + "\n"


def error_json(command: str, message: str, hint: str | None, exit_code: int) -> str:
    """What `--json` prints when a command ends before it has a report (bad input, no
    connection, interrupted): the same envelope, with the error."""
    return json.dumps({"ok": False, "command": command, "exit_code": exit_code,
                       "error": {"message": message, "hint": hint}}) + "\n"


def to_markdown(report: Report) -> str:
    """The checklist as Markdown, for CI artifacts (`--report FILE.md`)."""
    lines = [f"# restore-tool {report.command}: {'passed' if report.ok else 'FAILED'}", "",
             f"- **Target:** `{report.target}` (from {report.target_source})",
             *(f"- **{name}:** {value}" for name, value in report.facts), "",
             "| | step | summary | seconds |", "|---|---|---|---|"]
    for step in report.steps:
        summary = step.summary.replace("|", "\\|")
        lines.append(f"| {ICONS[step.status].strip()} | {step.name} | {summary} | "
                     f"{step.seconds:.2f} |")
    for step in report.steps:
        body = _STEP_BODIES.get(step.name)
        if body is not None and step.details:
            lines += ["", f"## {step.name}", "",
                      *(f"- {line}" for line in body(step) if line)]
    if report.next_steps:
        lines += ["", "## Next", "", *(f"- {hint}" for hint in report.next_steps)]
    return "\n".join(lines) + "\n"


def to_json(report: Report) -> str:
    """`{"ok", "command", "exit_code", "target", "target_source", "facts", "steps": [{"name",
    "status", "seconds", "summary", "details"}]}`."""
    return json.dumps(
        {
            "ok": report.ok,
            "command": report.command,
            "exit_code": int(report.exit_code),
            "target": report.target,
            "target_source": report.target_source,
            "facts": dict(report.facts),
            "steps": [
                {
                    "name": step.name,
                    "status": str(step.status),
                    "seconds": round(step.seconds, 3),
                    "summary": step.summary,
                    "details": [detail.as_dict() for detail in step.details],
                }
                for step in report.steps
            ],
        },
    ) + "\n"


# ---------------------------------------------------------------------------------------------
# Step bodies: the lines above the checklist for steps that have something to list.


def _fixes(step: StepResult) -> list[SequenceFix]:
    return [d for d in step.details if isinstance(d, SequenceFix)]


def _edge(fix: SequenceFix) -> str:
    return f"{fix.edge_kind}: {fix.edge}"


def _repair_body(step: StepResult) -> list[str]:
    fixes = _fixes(step)
    dry_run = any(f.action in (Action.FIXED, Action.MOVED_BACK) and not f.applied
                  for f in fixes)
    lines = ["🔧 Fixing all database sequences..." if not dry_run
             else "🔍 Dry run: planning sequence fixes, changing nothing...", ""]
    for fix in fixes:
        line = repair_line(fix)
        if line:
            lines.append(line)
    if len(lines) == 2:
        lines.append("No sequence needed a fix.")
    buckets = count(fixes)
    rest = ", ".join(f"{buckets[name]} {name}" for name in ("already fine", "skipped", "failed")
                     if buckets[name] or name == "already fine")
    lines.append("")
    moved = buckets["fixed"] + buckets["moved back"]
    if dry_run:
        lines.append(f"🔍 Would fix {moved} sequence(s); {rest}. Nothing was changed.")
    elif buckets["failed"] or buckets["skipped"]:
        lines.append(f"⚠️  Fixed {moved} sequence(s); {rest}.")
    else:
        lines.append(f"🎉 Successfully fixed {moved} sequence(s)! {rest}.")
    return lines


def repair_line(fix: SequenceFix) -> str | None:
    """One runbook line per sequence that was (or would be) touched, skipped or failed."""
    if fix.action is Action.FIXED:
        verb = "Fixed" if fix.applied else "Would fix"
        return (f"✅ {verb} {fix.label} sequence ({_edge(fix)}, next: {fix.next_after})"
                + (f"; {fix.reason}" if fix.reason else ""))
    if fix.action is Action.MOVED_BACK:
        verb = "Moved back" if fix.applied else "Would move back"
        return (f"↩️  {verb} {fix.label} sequence ({_edge(fix)}, next: {fix.next_after}, "
                f"was {fix.next_before})")
    if fix.action is Action.SKIPPED:
        return f"⚠️  Skipped {fix.label} sequence: {fix.reason}"
    if fix.action is Action.FAILED:
        return f"❌ Failed {fix.label} sequence: {fix.reason}"
    if fix.reason:  # fine, but worth saying why (moved by someone else meanwhile)
        return f"ℹ️  {fix.label} sequence: {fix.reason}"
    return None


def _check_body(step: StepResult) -> list[str]:
    fixes = _fixes(step)
    lines = [line for fix in fixes if (line := check_line(fix))]
    if not lines:
        lines.append(f"✅ All {len(fixes)} sequence(s) are ahead of their data.")
    return lines


def check_line(fix: SequenceFix) -> str | None:
    """`user.user_id: next 4 but max is 17` for every sequence that lags."""
    if fix.action is Action.FIXED:
        return f"❌ {fix.label}: next {fix.next_before} but {fix.edge_kind} is {fix.edge}"
    if fix.action is Action.FAILED:
        return f"❌ {fix.label}: {fix.reason}"
    if fix.action is Action.SKIPPED:
        return f"⚠️  {fix.label}: not checked, {fix.reason}"
    return None


def _load_body(step: StepResult) -> list[str]:
    from .restoring.load import LoadError

    errors = [d for d in step.details if isinstance(d, LoadError)]
    return [f"{'⚠️ ' if error.tolerated else '❌'} {error}" for error in errors]


def _smoke_body(step: StepResult) -> list[str]:
    """Failed and skipped inserts by name, passed ones counted (JSON lists every table)."""
    from .smoke import SmokeResult, Verdict

    results = [d for d in step.details if isinstance(d, SmokeResult)]
    lines = ["🧪 Smoke test: one insert per table, each rolled back...", ""]
    for result in results:
        what = f"{result.table} (configured row)" if result.configured else result.table
        if result.verdict is Verdict.FAILED:
            lines.append(f"❌ {what}: {result.reason}")
        elif result.verdict is Verdict.SKIPPED:
            lines.append(f"⚠️  {what}: skipped, {result.reason}")
    passed = [r for r in results if r.verdict is Verdict.PASSED]
    configured = sum(r.configured for r in passed)
    lines.append(f"✅ {len(passed)} table(s) took a rolled-back insert"
                 + (f" ({configured} configured row(s))" if configured else "") + ".")
    return lines


def _hook_body(step: StepResult) -> list[str]:
    """The end of the --migrate command's output (alembic says FAILED: … on stdout)."""
    from .restoring.hooks import HookOutput

    lines = []
    for ran in (d for d in step.details if isinstance(d, HookOutput)):
        lines.append(f"🪝 {ran.command!r} exited with code {ran.exit_code}"
                     + (f"; its last {len(ran.lines)} line(s):" if ran.lines else ", silent."))
        lines += [f"    {line}" for line in ran.lines]
    return lines


def _proof_body(step: StepResult) -> list[str]:
    """Each check of the proof, and every difference it found."""
    from .proof import Check

    lines = []
    for check in (d for d in step.details if isinstance(d, Check)):
        lines.append(f"{ICONS[check.status].rstrip()} {check.name}: {check.summary}")
        lines += [f"    ❌ {difference}" for difference in check.differences]
    return lines


_STEP_BODIES = {StepName.REPAIR_SEQUENCES: _repair_body, StepName.CHECK_SEQUENCES: _check_body,
                StepName.SMOKE_TEST: _smoke_body, StepName.LOAD: _load_body,
                StepName.POST_RESTORE: _hook_body, StepName.PROOF: _proof_body}

