"""RAMP submission states and the transitions our backend makes: the one place they are written.

The names are those of ramp-database 0.10.1's ``submission_states`` enum. ramp-board's
dispatcher moves a submission ``new -> sent_to_training -> training -> tested -> scored``,
to ``training_error`` or ``checking_error``, or back to ``new`` for a retry. We record
results in one transaction, so ``tested`` is never written: nothing can stay there.
"""

from __future__ import annotations

from typing import Any

NEW = "new"
SENT_TO_TRAINING = "sent_to_training"
TRAINING = "training"
SCORED = "scored"
TRAINING_ERROR = "training_error"
CHECKING_ERROR = "checking_error"

# The states a submission may be in while our backend owns it.
IN_FLIGHT = (SENT_TO_TRAINING, TRAINING)
# The states our backend ends a training in: a run asked to train one of them again may.
TRAINED = (SCORED, TRAINING_ERROR, CHECKING_ERROR)

# target state -> the states it may be reached from.
ALLOWED_FROM: dict[str, tuple[str, ...]] = {
    SENT_TO_TRAINING: (NEW,),
    TRAINING: (SENT_TO_TRAINING,),
    TRAINING_ERROR: IN_FLIGHT,
    CHECKING_ERROR: IN_FLIGHT,
    NEW: IN_FLIGHT,
    SCORED: IN_FLIGHT,
}

# ramp-engine's dispatcher stores this text when a submission could not be sent to training.
PLATFORM_ERROR_MSG = (
    "There was a problem with sending your submission for training. This problem is on "
    "RAMP side and most likely it is not related to your code. If this happened for the "
    "first time to this submission you might consider submitting the same code once "
    "again. Else, please contact the event organizers."
)
# What a submission whose training an operator stopped says (after PLATFORM_ERROR_MSG).
CANCELLED_BY_OPERATOR = "Training was cancelled by an operator"


class StateTransitionError(ValueError):
    """A submission is not in a state the requested transition may start from."""


def check_transition(submission_id: int, current: str, target: str) -> None:
    """
    Refuse a transition that ramp-board's life cycle does not allow.

    :param submission_id: the submission's id (named in the error).
    :param current: its state now.
    :param target: the state asked for.
    :raises StateTransitionError: when ``current`` is not an allowed origin of ``target``.
    """
    allowed = ALLOWED_FROM[target]
    if current not in allowed:
        raise StateTransitionError(
            f"submission {submission_id} is in state {current!r}; it can only be moved to "
            f"{target!r} from {' or '.join(repr(s) for s in allowed)}. Another run may have "
            "handled it already: check its state in the RAMP database before retrying."
        )


def log_transition(log: Any, submission_id: int, old: str, new: str, owner: object | None = None) -> None:
    """
    Log a submission's state change: the one INFO line per change that an operator greps for,
    ``Submission 42: sent_to_training -> training (run <run id> of <dag id>)``.

    :param log: the logger of the hook that made the change.
    :param submission_id: the submission's id.
    :param old: its state before.
    :param new: its state now.
    :param owner: the run that owns its claim, when there is one (its ``str`` is shown).
    """
    log.info("Submission %s: %s -> %s%s", submission_id, old, new, f" ({owner})" if owner else "")


def checking_error_message(reason: str) -> str:
    """
    The error message shown to participants for a failure on the platform's side.

    :param reason: what went wrong (kept after ramp-board's standard text; may be empty).
    """
    reason = reason.strip()
    return f"{PLATFORM_ERROR_MSG}\nReason: {reason}" if reason else PLATFORM_ERROR_MSG
