"""Experiment grids: poison → train → evaluate runs over counts, seeds, ranks, triggers and
base models, run resumably (:mod:`.sweep`) and summarised (:mod:`.summary`).

- :mod:`.grid`: the grid config, its expansion into runs and the runs' folder names;
- :mod:`.rundir`: one run's folder, when it is complete, and executing one run;
- :mod:`.executors`: where runs execute (serial, a local process pool; the interface a
  distributed engine would implement);
- :mod:`.sweep`: planning and running a grid into an output folder;
- :mod:`.summary`: mean ± std over seeds, the smallest k reaching a mean ASR, the band.
"""

from lorascan.experiments.executors import Executor, ProcessExecutor, SerialExecutor
from lorascan.experiments.grid import GridConfig, Run, load_grid, parse_grid
from lorascan.experiments.sweep import SweepOutcome, SweepPlan, plan_sweep, run_sweep

__all__ = ["Executor", "GridConfig", "ProcessExecutor", "Run", "SerialExecutor", "SweepOutcome", "SweepPlan",
           "load_grid", "parse_grid", "plan_sweep", "run_sweep"]
