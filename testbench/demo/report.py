"""What the demo prints: one line per state change of a submission, then the leaderboard."""

from __future__ import annotations

import time

FINAL_STATES = ("scored", "training_error", "checking_error")

SUBMISSIONS_SQL = """
SELECT s.id, s.name, t.name, s.state
FROM submissions s
JOIN event_teams et ON et.id = s.event_team_id
JOIN events e ON e.id = et.event_id
JOIN teams t ON t.id = et.team_id
WHERE e.name = %(event)s AND s.name <> e.ramp_sandbox_name
ORDER BY s.id
"""

# The official score is events.official_score_name, else the event's first score type;
# its bagged scores are the ones the RAMP leaderboard shows.
LEADERBOARD_SQL = """
WITH event AS (SELECT id, ramp_sandbox_name, official_score_name FROM events WHERE name = %(event)s),
score AS (
    SELECT est.id, est.name FROM event_score_types est, event
    WHERE est.event_id = event.id
    ORDER BY (est.name = event.official_score_name) DESC, est.id LIMIT 1
)
SELECT s.id, s.name, t.name, s.state, score.name,
       ss.valid_score_cv_bag, ss.test_score_cv_bag,
       (SELECT avg(f.train_time) FROM submission_on_cv_folds f WHERE f.submission_id = s.id),
       s.max_ram
FROM submissions s
JOIN event_teams et ON et.id = s.event_team_id
JOIN event ON event.id = et.event_id
JOIN teams t ON t.id = et.team_id
CROSS JOIN score
LEFT JOIN submission_scores ss ON ss.submission_id = s.id AND ss.event_score_type_id = score.id
WHERE s.name <> event.ramp_sandbox_name
ORDER BY ss.valid_score_cv_bag IS NULL, s.id
"""


class Progress:
    """Prints a line whenever a submission's state changes; knows when all are final."""

    def __init__(self, db, out):
        """
        :param db: the demo's :class:`testbench.ramp_database.RampDatabase`.
        :param out: where to print (a text stream).
        """
        self.db, self.out = db, out
        self.start = time.monotonic()
        self.states: dict[int, str] = {}

    def poll(self) -> bool:
        """Print the changes since the last poll; True when every submission is final."""
        rows = self.db.query(SUBMISSIONS_SQL, {"event": self.db.event})
        for sub_id, name, team, state in rows:
            before = self.states.get(sub_id)
            if state != before:
                change = f"{before} -> {state}" if before else state
                print(
                    f"[{time.monotonic() - self.start:6.1f}s] submission {sub_id} {name!r} ({team}): {change}",
                    file=self.out,
                    flush=True,
                )
                self.states[sub_id] = state
        return bool(rows) and all(state in FINAL_STATES for state in self.states.values())


def _number(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def leaderboard(db) -> tuple[str, list[dict]]:
    """The leaderboard as text, and its rows as dicts (for callers that check them)."""
    rows = db.query(LEADERBOARD_SQL, {"event": db.event})
    keys = ("id", "submission", "team", "state", "score", "valid", "test", "train_time", "max_ram")
    records = [dict(zip(keys, row)) for row in rows]
    score = records[0]["score"] if records else "score"
    header = ("submission", "team", "state", f"{score} valid", f"{score} test", "train time (s)", "max RAM (MB)")
    for r in records:
        if r["state"] != "scored":  # ramp-database creates the score rows, zeroed, up front
            r["valid"] = r["test"] = r["train_time"] = None
    table = [header] + [
        (
            r["submission"],
            r["team"],
            r["state"],
            _number(r["valid"]),
            _number(r["test"]),
            _number(r["train_time"], 2),
            _number(r["max_ram"], 1),
        )
        for r in records
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines), records
