"""The worker actor (one per agent CLI), how a CLI is launched, its environment, and the demo agent
CLIs.
"""
