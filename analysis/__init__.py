"""Experiments, claims, reports and figures from run folders."""
