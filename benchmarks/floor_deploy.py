"""The floor of deploy_bench.py: one command per host (`true`), nothing else. What any pyinfra
deploy costs on the same inventory (start-up, inventory, SSH connection, one command, results),
so that a re-run's time can be read as a multiple of what pyinfra itself needs."""

from pyinfra.operations import server

server.shell(name="floor: one command per host", commands=["true"])
