"""The host's systemd and OS: systemctl, privilege drop, the agent's units."""
