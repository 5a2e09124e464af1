"""Versioned vocabularies (CSV data) shipped with the package."""
