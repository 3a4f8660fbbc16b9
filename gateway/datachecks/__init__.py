"""Data checks: configured SQL queries against the migration's databases, run by one instance,
judged against an expectation, and fed to the safety net's triggers (see ``runner``)."""
