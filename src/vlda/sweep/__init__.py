"""``vlda sweep``: many runs (tasks × hyper-parameters × seeds) from one sweep file.

It sits beside the demo, above the engine: it builds and checks every trial's run config
(:mod:`vlda.sweep.plan`) and launches each trial as a normal ``vlda train`` run
(:mod:`vlda.sweep.launch`), locally or through submitit; :mod:`vlda.sweep.runner` ties them.
"""
