"""The states of a training job on its instance, and the outcomes of a training: the one place they are written.

A training job reports itself in two ways (see :mod:`ramp_airflow.utils.training_job`): starting it
answers :data:`STARTED`, :data:`RUNNING` (a training of the submission was already running) or
:data:`ENDED` (this task already ran it to its end); a poll answers :data:`RUNNING`,
:data:`FINISHED` (with its exit code) or :data:`DIED` (no exit code, no live process).

The training wait turns those into an outcome, what the rest of the DAG decides on.
"""

from __future__ import annotations

# Answers of the start command.
STARTED = "started"
RUNNING = "running"
ENDED = "ended"
START_STATES = (STARTED, RUNNING, ENDED)

# Answers of a poll; RUNNING as above.
FINISHED = "finished"
DIED = "died"

# Outcomes of a training: FINISHED and DIED as above, or it ran past its time limit and was
# killed, or its instance disappeared (terminated or reclaimed) meanwhile.
TIMEOUT = "timeout"
LOST = "lost"
OUTCOMES = frozenset({FINISHED, DIED, TIMEOUT, LOST})
