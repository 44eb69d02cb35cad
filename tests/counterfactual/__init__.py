"""Tests of the counterfactual layer (a package so its modules share _helpers)."""
