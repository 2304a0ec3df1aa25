"""Placement: a run on the cluster says which node it landed on; state.json keeps it."""

from __future__ import annotations

from meta_orchestrator.actors.session.core.step import StepBase
from meta_orchestrator.messages.cluster import RunPlaced


class PlacementRules(StepBase):
    def on_run_placed(self, message: RunPlaced) -> None:
        record = self.records.get(message.assignment_id)
        if record is None or record.phase not in ("running", "paused") or record.agent != message.agent:
            return  # it ended (or was handed over) before the fact arrived
        self.put(record.id, node=message.node)
