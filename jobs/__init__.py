"""Batch jobs on apscheduler; each job calls knowledge/ and takes an advisory lock."""
