"""The workspace actor, the session's git store and checkouts, folder workspaces, apply and
discard, and their commands and wiring.
"""
