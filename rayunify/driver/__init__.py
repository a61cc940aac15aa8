"""The driver: one process owns the loop and the logger (single controller); Ray actors do the work.

  trainer.py       the loop: online (Algorithm 1) and offline (Algorithm 2), nothing else
  collector.py     generate + judge chunks on the rollout and judge actors; retries, actor restarts
  build.py         the offline build: chunks of prompts, each handed to the data and checkpointed
  weight_sync.py   the one weight-push path (object store or broadcast) and the push group's lifecycle
  monitor.py       evaluation, the false-positive probe, fixed-image re-judging, the guard, image logs
  checkpointer.py  atomic, verified checkpoints (temporary dir + manifest + rename), newest intact on resume
  rundir.py        the run's lock, resume-or-fresh and its refusals, the config a resume may change
  stopping.py      SIGINT/SIGTERM at step boundaries, the one-line failures (lost actors, divergence)
  runtime.py       Ray start-up, `ray_get` with actor death as one exception, the actors of a run

Only the CLI entry (`rayunify.train`) imports this package.
"""
