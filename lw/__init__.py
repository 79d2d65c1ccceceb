"""The program layer: the `lw` command line, its configs (lw/conf) and one module per command.

Libraries below (worldmodel, envs, planners, pretrain) never import this package.
"""
