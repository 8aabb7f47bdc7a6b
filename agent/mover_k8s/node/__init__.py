"""The node agent: exposers (how a volume is reached on a node) and jobs (the data path run)."""
