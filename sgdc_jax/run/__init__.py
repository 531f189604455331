"""The run machinery: config, experiment and train state, train, evaluate, predict, checkpoints
with recovery, the workdir, sharding, writers, hooks and outputs, and the command-line layer."""
