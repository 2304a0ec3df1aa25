"""Names vulture calls unused that must stay, and why (read by vulture only; see [tool.vulture]).

Each line uses the name, so vulture counts it as used. Remove a line when its reason goes.
"""

# ruff: noqa: B018, F821
# Fields of the messages and of state.json: data for the dashboard (webui/static), the files of a
# session and their readers, written by the actors and read there, not in Python.
actual_by_tokens  # the dashboard's share bars
answered_at  # reviews/<id>/decision.json
asked_at  # a question's age on the dashboard
created_at  # state.json, workspace.json
ended_at  # state.json
updated_at  # state.json
event_seq  # a review's trigger: the event it points to
events_recorded  # the dashboard's worker card
message_id  # every message's identity, in history.jsonl
planned_at  # state.json recoveries
server_time  # the hello frame: the browser's clock skew
tool_use_id  # sandbox calls: the CLI's own id, in the audit file
host_pid  # a node's reply: the run host's process, for the user looking at the node

# Set for a library, which reads them.
_.raise_errors  # Ray's worker: reports unread error replies through cluster_host._unread_errors
object_refs  # a parameter of that hook: Ray's calling signature
_.resolve_ip_for_localhost  # Ray's node config in tests/ray_cluster.py
sort_keys  # Flask's JSON provider (webui.app.InOrderJSON)
_.connected  # simple-websocket's client (tests/webui/test_gateway_ws.WsClient)

# A test changes an object's class to make it crash on purpose (test_supervision.py).
_.__class__
