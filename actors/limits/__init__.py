"""The resource monitor actor, its limit rules and where its figures come from."""
