"""Scoring variants of unknown significance: the scores, their calibration, evidence codes, outputs and evaluation."""
