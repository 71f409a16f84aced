"""Storage: atomic writes and hashes, HDF5 and TFRecord shards, and the reader registry chosen by file suffix."""
