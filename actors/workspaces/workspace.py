"""Workspace actor: the session's checkouts, commits and merges, around one ``SessionRepo``.

The coordinator tells it ``PrepareCheckout`` before a writing assignment runs and
``MergeAssignment`` after its run succeeded; each is answered with a fact to ``reply_to``
(``CheckoutReady``/``CheckoutFailed``, ``AssignmentMerged``). After each merge that moved the
session branch, and at start when it has moved already (a resumed session), the listeners
(the dashboard) are told ``ChangesUpdated``.

Git failing is an expected failure: it becomes the answer (``CheckoutFailed``, or
``AssignmentMerged(error=...)``), never a crash, so the coordinator always hears back about
what it asked (a restarted actor would not know what was asked of the one before). Git
itself runs in ``workspaces.workspaces``; this actor only sequences it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pykka

from meta_orchestrator.actors.workspaces.git_command import WorkspaceError
from meta_orchestrator.actors.supervision.supervision import report_crash_of, tell_all
from meta_orchestrator.actors.workspaces.workspaces import ConflictMarkersLeft, SessionRepo
from meta_orchestrator.messages.workspace import (
    AssignmentMerged,
    ChangesUpdated,
    CheckoutFailed,
    CheckoutReady,
    MergeAssignment,
    MergeResult,
    PrepareCheckout,
)

log = logging.getLogger(__name__)


class Workspace(pykka.ThreadingActor):
    """Makes each assignment's checkout, and commits and merges its work when it is done."""

    def __init__(self, repo: SessionRepo, listeners: Sequence[pykka.ActorRef[Any]] = ()) -> None:
        super().__init__()
        self._repo = repo
        self._listeners = tuple(listeners)

    def on_start(self) -> None:
        if self._tip() not in (None, self._repo.base):
            self._publish_changes()  # a resumed session: the dashboard shows what it has so far

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        report_crash_of(self, exception_value)

    def on_receive(self, message: Any) -> Any:
        match message:
            case PrepareCheckout():
                return self._on_prepare(message)
            case MergeAssignment():
                return self._on_merge(message)
        return super().on_receive(message)

    def _on_prepare(self, message: PrepareCheckout) -> None:
        try:
            # An existing checkout is reused as it is: after a conflict it holds the markers.
            checkout = self._repo.checkout(message.assignment_id, writing=message.writing)
        except Exception as exc:  # noqa: BLE001 - git's failures and any other: the coordinator must hear
            log.error("no checkout for %s: %s", message.assignment_id, exc)
            _reply(message.reply_to, CheckoutFailed(assignment_id=message.assignment_id, error=str(exc)))
            return
        _, read_only = checkout.sandbox_paths()
        _reply(
            message.reply_to,
            CheckoutReady(
                assignment_id=message.assignment_id,
                workdir=str(checkout.workdir),
                base=checkout.base,
                read_only_dirs=read_only,
                note=checkout.note,
            ),
        )

    def _on_merge(self, message: MergeAssignment) -> None:
        assignment_id = message.assignment_id
        before = self._tip()
        try:
            fact = self._merge(message)
        except Exception as exc:  # noqa: BLE001 - as above: an answer, never a lost request
            log.error("merging %s failed: %s", assignment_id, exc)
            fact = AssignmentMerged(assignment_id=assignment_id, error=str(exc))
        record = self._repo.record.checkouts.get(assignment_id)
        if record is not None and record.left_out:
            fact = fact.model_copy(update={"left_out": record.left_out})
        _reply(message.reply_to, fact)
        if fact.result is not None and fact.result.ok and fact.result.commit != before:
            self._publish_changes()

    def _merge(self, message: MergeAssignment) -> AssignmentMerged:
        """Commit the checkout, merge it; on a conflict, leave the markers in the checkout."""
        assignment_id = message.assignment_id
        repo = self._repo
        try:
            commit = repo.commit_assignment(assignment_id, message.agent, message.title, message.files_written)
        except ConflictMarkersLeft as exc:
            # Its agent did not finish resolving: the same conflict, another round.
            result = MergeResult(assignment_id=assignment_id, status="conflict", commit=repo.tip(), conflicts=exc.files)
            return AssignmentMerged(assignment_id=assignment_id, result=result)
        result = repo.merge_assignment(assignment_id)
        if result.status == "conflict":
            files = repo.prepare_conflict(assignment_id)
            if files:
                result = result.model_copy(update={"conflicts": files})
                return AssignmentMerged(assignment_id=assignment_id, result=result, commit=commit)
            # git merged it cleanly in the checkout after all: commit that and merge again.
            commit = repo.commit_assignment(assignment_id, message.agent, message.title, message.files_written)
            result = repo.merge_assignment(assignment_id)
        return AssignmentMerged(assignment_id=assignment_id, result=result, commit=commit)

    def _tip(self) -> str | None:
        try:
            return self._repo.tip()
        except WorkspaceError:
            return None

    def _publish_changes(self) -> None:
        try:
            changes = self._repo.session_changes()
        except (WorkspaceError, OSError) as exc:
            log.warning("the session's changes cannot be read: %s", exc)
            return
        tell_all(self._listeners, ChangesUpdated(changes=changes))


def _reply(to: Any, fact: Any) -> None:
    if to is None:
        return
    try:
        to.tell(fact)
    except pykka.ActorDeadError:
        log.warning("%s: nobody is listening", type(fact).__name__)


__all__ = ["Workspace"]
