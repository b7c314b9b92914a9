"""Curation: the selection strategies that order training samples, and the forward-only consistency
checks that drop broken ones first."""
