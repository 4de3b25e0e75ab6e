# The README's commands. `make run` sets up and runs the pipeline; `make test` sets up and runs the tests.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
include segpipe/telemetry_off.mk
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120

MLFLOW_HOST ?= 127.0.0.1
PREFECT_HOST ?= 127.0.0.1
MLFLOW_PORT ?= 5000
MLFLOW_BACKEND ?= sqlite:///mlflow-server.db
MLFLOW_ARTIFACTS ?= ./mlflow-artifacts

.PHONY: setup run test lint bench mlflow-server prefect-server clean-outputs

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

run: setup
	dvc repro

test: setup
	pytest -q

lint: setup
	ruff check .

bench: setup
	python -m bench.loader_throughput
	python -m bench.train_throughput
	python -m bench.pq_throughput
	python -m bench.eval_memory
	python -m bench.team_runs
	python -m bench.sweep_workers
	python -m bench.serving
	python -m bench.inference_cost

# The server recipes are not echoed (@): a password in MLFLOW_BACKEND or the environment never reaches the terminal.
# With MLFLOW_AUTH_ADMIN_PASSWORD set, the tracking server runs MLflow's basic-auth app (segpipe/mlflow_auth.ini);
# with PREFECT_SERVER_API_AUTH_STRING set, the Prefect server asks every client for it.
mlflow-server: setup
	@echo "mlflow server on http://$(MLFLOW_HOST):$(MLFLOW_PORT), artifacts in $(MLFLOW_ARTIFACTS)$(if $(MLFLOW_AUTH_ADMIN_PASSWORD), (basic auth: users must log in))"
	@MLFLOW_AUTH_CONFIG_PATH="$${MLFLOW_AUTH_CONFIG_PATH:-$(abspath segpipe/mlflow_auth.ini)}" \
		mlflow server --host $(MLFLOW_HOST) --port $(MLFLOW_PORT) --workers 1 \
		--backend-store-uri "$(MLFLOW_BACKEND)" --artifacts-destination "$(MLFLOW_ARTIFACTS)" \
		$(if $(MLFLOW_AUTH_ADMIN_PASSWORD),--app-name basic-auth)

prefect-server: setup
	@echo "prefect server on http://$(PREFECT_HOST):4200$(if $(PREFECT_SERVER_API_AUTH_STRING), (clients need PREFECT_API_AUTH_STRING))"
	@prefect server start --host $(PREFECT_HOST)

clean-outputs: setup  # the stages' outputs only (dvc.yaml's outs); never source data, downloads or your files
	python -m segpipe.stage_outputs --remove
