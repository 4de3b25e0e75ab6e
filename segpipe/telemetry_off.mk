# The telemetry of the tools segpipe runs, switched off. The one list: the Makefile includes this file, and
# segpipe.stage reads it for every stage, flow and command (a value the user set in the environment wins).
export DVC_NO_ANALYTICS ?= 1
export MLFLOW_DISABLE_TELEMETRY ?= true
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1
