"""The repository's objects: the repository itself (config, keys, index, packs written through
it), snapshots, the trees of chunk lists under them, checkpoints of unfinished backups, and the
locks that keep writers and maintenance apart. Built on content/ and storage/; the pipeline and
maintenance layers sit on top of it."""
