"""Where decisions are made: pure functions from wanted state and a host's facts to a plan.

Each module reads a task's facts (the output of its facts script, parsed) and
returns a plan: a value that says what would change and why. ``--dry-run`` prints
it; the task's apply step carries out that same plan and nothing else. Nothing in
this package runs a command.
"""
