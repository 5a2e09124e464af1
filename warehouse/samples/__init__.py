"""Format-faithful sample generators for datasets that cannot be downloaded here.

Each module writes small copies of one dataset's native files (same names, headers,
encodings and odd spellings) so the adapters can be built and tested against exactly
what the real files contain.
"""
