"""What a session recorded: the history actor, event logs and their pages, the session index,
replay and resume.
"""
