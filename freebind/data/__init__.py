"""Data as users keep it, and the embedding store: readers (folders, tar shards, tables,
datasets folders), media decoding, the content-addressed store and aligned encoding. Imports
only :mod:`freebind.util`."""
