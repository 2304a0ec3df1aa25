"""Child processes of a run: their groups, the process host (spawn, signal, read lines), reader
threads, the process tree and what is left after a crash.
"""
