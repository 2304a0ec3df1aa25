"""The session's rules as a pure state machine: ``handle(state, message, now) -> (state, effects)``.

Nothing here touches a process, a thread, a file or an actor (the sans-I/O layering of
mitmproxy): the Coordinator actor feeds every message it receives to ``handle`` and carries out
the effects it gets back, which are plain data (tell an actor, start a timer, persist the
snapshot, publish it). Tests drive it with message sequences and look at the effects.
"""

from meta_orchestrator.actors.session.core.core import handle
from meta_orchestrator.actors.session.core.phases import IllegalTransition
from meta_orchestrator.actors.session.core.state import PLAN_ID, CoreConfig, CoreState, initial_state

__all__ = ["PLAN_ID", "CoreConfig", "CoreState", "IllegalTransition", "handle", "initial_state"]
