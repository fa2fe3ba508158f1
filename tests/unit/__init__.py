"""In-process tests of the pure parts: no root, no bubblewrap, no root filesystem."""
