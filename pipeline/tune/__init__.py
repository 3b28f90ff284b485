"""Hyperparameter search (`python -m pipeline tune`) on Optuna; above the config layer, no TensorFlow.

- `space`: the `tune:` section checked against the experiment (keys, ranges, metric);
- `study`: the study directory, storage, sampler, pruner, and the owners of running trials;
- `trial`: one trial, a `train` process watched through its history.csv;
- `search`: the workers' loop until the study holds `tune.trials` finished trials;
- `report`: best trials, importances, best.yaml, HParams;
- `command`: the command line.
"""
