"""Keeping a repository healthy: retention policies and forget, prune and repack, check
(with or without reading the data), and repair of damaged indexes, packs and snapshots."""
