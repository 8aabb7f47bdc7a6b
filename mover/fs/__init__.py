"""File systems inside volume images, read through a snapshot's random access (no mount, no
restore): only the blocks a listing or a file needs are fetched."""
