"""Studies beyond the paper: evaluations of trained runs under conditions the paper did not test."""
