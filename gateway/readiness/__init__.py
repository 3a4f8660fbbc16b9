"""The readiness report: per flag, the team's success criteria evaluated from live evidence."""
