"""Valuation: one forward pass gives each sample's features (For-Value's sparse gradient factors),
which score training samples against a valuation set and explain a score."""
