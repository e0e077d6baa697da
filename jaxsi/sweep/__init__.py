"""jaxsi.sweep: experiment sweeps over gin bindings, their executors and summaries.

One concept per module:

* ``definition`` — the sweep file (TOML next to the gin files) and its
  expansion into trials with stable ids;
* ``executor`` — runs trials as ordinary launcher runs, N at a time, each in
  its own process and workdir; reruns resume;
* ``slurm`` — the same trials as a SLURM job array (an sbatch script and a
  trial list; no scheduler of our own);
* ``results`` — reads one run's workdir (``results.json``, ``rounds.json``,
  ``metrics.jsonl``);
* ``summary`` — mean ± std over seeds per metric and configuration, as
  markdown and JSON;
* ``plots`` — learning curves with spread bands and final metrics per axis
  value (matplotlib);
* ``compare`` — several run workdirs side by side (``jaxsi compare``).

Nothing here imports gin or JAX at module level: a sweep drives launcher
processes, it does not run models itself.
"""
