"""Cleaning: blank frames, exact and near duplicates, and the checks that guard the tables."""
