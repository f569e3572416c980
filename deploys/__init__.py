"""Workstation side of slurmrestd-access: pyinfra deploys.

Run them with `pyinfra INVENTORY deploys/X.py`.
"""
