"""Building blocks of the deploys: here the deploy and what every command reads (settings, the
cluster's roles, the host survey, facts, privilege); fleet/ the rotation, rollout, report and
summary built on them."""
