"""Decide: pure policies that turn observations into desired state."""
