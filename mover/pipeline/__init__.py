"""The data path: read a source, cut it into chunks in parallel, store what is new as a
snapshot (backup), and the ways back: restore a whole image, read any range of a snapshot, copy
snapshots between repositories (replicate), back up only changed ranges."""
