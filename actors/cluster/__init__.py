"""Agent CLIs on other machines (Ray): the node's host, its wire, remote folders and checkouts, git
bundles, the cluster's token and wiring.
"""
