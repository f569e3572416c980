"""Slurm and agent configuration: slurm.conf, slurmdbd.conf, agent.ini, the drop-in, atomic writes,
preflight.
"""
