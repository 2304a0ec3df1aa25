"""The actors of the meta-orchestrator, one per module, and the code they stand on."""
