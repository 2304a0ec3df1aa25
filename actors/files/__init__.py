"""The files of a session on disk: private folders, atomic writes, reads that follow no symlink."""
