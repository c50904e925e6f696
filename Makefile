# Mimic: `make demo` and `make test` are the two commands a new machine needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
DEBS := libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6
MESHES := sim/assets/robosuite/visuals.json

# DDS must never leave this machine, and each run gets its own domain.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_DOMAIN_ID ?= $(shell $(PYTHON) -c 'import random; print(random.SystemRandom().randint(1, 100))')
export MUJOCO_GL ?= egl
export PYTHONUNBUFFERED := 1

PYTEST := $(PY) -m pytest -p no:cacheprovider

.PHONY: setup test test-fast test-integration test-e2e bench lint demo push-t-teacher push-t-consistency push-t-ddpm \
	push-t-edm pick-place pick-place-image reach track track-rtc handheld-eef clean

setup: $(STAMP) $(MESHES)

$(STAMP): pyproject.toml
	@missing=$$(for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages for headless rendering: $$missing"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing; \
	fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[hw,dev]"
	$(PY) -m pip check
	rm -f $(VENV)/.installed-*; touch $@

# The twins' manufacturer meshes (mimic.sim.robosuite_assets): robosuite's wheel at the version pinned in pyproject's
# [tool.mimic], fetched by name with pip and unpacked once. Without a registry the twins keep their capsules, so
# a failed fetch is a notice, not a failed setup.
$(MESHES): pyproject.toml sim/robosuite_assets.py | $(STAMP)
	@ver=$$($(PY) -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["tool"]["mimic"]["robosuite-assets"])'); \
	tmp=$$(mktemp -d); \
	if $(PY) -m pip download -q --no-deps "robosuite==$$ver" -d "$$tmp"; then \
	  $(PY) -c 'import sys; from mimic.sim.robosuite_assets import main; sys.exit(main(sys.argv[1:]))' \
	    "$$tmp"/robosuite-$$ver-*.whl; rc=$$?; \
	else echo "robosuite==$$ver not downloadable: the twins keep their capsules"; rc=0; fi; \
	rm -rf "$$tmp"; exit $$rc

# Each tier runs on its own so that a tier that collects nothing fails (pytest exits 5). ur_rtde, which can
# segfault inside its own reconnect path, runs in a child process of the UR backend (mimic.robots.ur_worker),
# so a crash there is a latched fault in the test, not the end of the run.
test: setup
	$(PYTEST) -m unit tests
	$(PYTEST) -m integration tests
	@if ls tests/e2e/test_*.py >/dev/null 2>&1; then $(PYTEST) -m e2e tests; fi

test-fast: setup
	$(PYTEST) -m unit tests

test-integration: setup
	$(PYTEST) -m integration tests

test-e2e: setup
	$(PYTEST) -m e2e tests

# The whole loop on the Franka twin; DEMO_ARGS="--arm ur5e", "--quick", "--fresh all" ...
demo: setup
	$(PY) -m mimic.cli demo $(DEMO_ARGS)

bench: setup
	$(PY) -m bench.run $(BENCH_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# push_t's flow teacher from nothing, then its 1-step consistency student (docs/results.md: 93.8% and 89.5%):
# 200 expert demos, round 0 at 50000 steps, three DAgger rounds as fine-tuning. Each stage is its own command
# (record, dagger, train); a finished one returns at once and a killed training resumes, so running the target
# again continues the chain. About 5 h and 1 h on one core. More cores:
# TRAIN_ARGS="--set threads=2" DAGGER_ARGS="--set dagger.workers=2".
MIMIC := $(PY) -m mimic.cli
TRAIN_ARGS ?=
DAGGER_ARGS ?=
PUSH_T := policies/configs/push_t_state_flow
push-t-teacher: setup
	$(MIMIC) record $(PUSH_T).yaml
	$(MIMIC) train $(PUSH_T).yaml --set steps=50000 $(TRAIN_ARGS)
	for round in ft ft2 ft3; do \
	  $(MIMIC) dagger $(PUSH_T)_dagger_$$round.yaml $(DAGGER_ARGS) && \
	  $(MIMIC) train $(PUSH_T)_dagger_$$round.yaml $(TRAIN_ARGS) || exit 1; \
	done

push-t-consistency: push-t-teacher
	$(MIMIC) train policies/configs/push_t_state_consistency_flow.yaml $(TRAIN_ARGS)

# The other results of docs/results.md, each chain as its page states it (runs/ paths in the configs are
# written by these targets).
DDPM_FT := policies/configs/push_t_state_diffusion_dagger_ft.yaml
push-t-ddpm: push-t-teacher
	$(MIMIC) record policies/configs/push_t_state_diffusion.yaml
	$(MIMIC) train policies/configs/push_t_state_diffusion.yaml $(TRAIN_ARGS)
	for steps in 20000 30000; do $(MIMIC) train policies/configs/push_t_state_diffusion.yaml $(TRAIN_ARGS) \
	  --set dataset=runs/datasets/push_t_franka_200_r1flow50k.zarr --set init_from=runs/push_t_state_diffusion/checkpoint \
	  --set lr=5e-4 --set run_dir=runs/push_t_ddpm_ft_r1 --set steps=$$steps || exit 1; done
	prev=runs/datasets/push_t_franka_200_r1flow50k.zarr; \
	for r in 2 3 4 5 6; do \
	  seed=$$(( r == 2 ? 50300 : 50200 + 100 * r )); \
	  set -- --set dagger.policy=runs/push_t_ddpm_ft_r$$((r - 1))/checkpoint --set dagger.demos=$$prev \
	    --set dagger.seed=$$seed --set dataset=runs/datasets/push_t_franka_r$${r}ddpm.zarr \
	    --set init_from=runs/push_t_ddpm_ft_r$$((r - 1))/checkpoint --set run_dir=runs/push_t_ddpm_ft_r$$r; \
	  $(MIMIC) dagger $(DDPM_FT) "$$@" $(DAGGER_ARGS) && $(MIMIC) train $(DDPM_FT) "$$@" $(TRAIN_ARGS) || exit 1; \
	  prev=runs/datasets/push_t_franka_r$${r}ddpm.zarr; \
	done
	$(MIMIC) train policies/configs/push_t_state_diffusion_dagger_wide.yaml $(TRAIN_ARGS)

push-t-edm: setup
	$(MIMIC) record $(PUSH_T).yaml
	$(MIMIC) train $(PUSH_T).yaml --set steps=6000 --set run_dir=runs/push_t_state_flow_6k $(TRAIN_ARGS)
	$(MIMIC) dagger policies/configs/push_t_state_edm_dagger.yaml \
	  --set dagger.policy=runs/push_t_state_flow_6k/checkpoint $(DAGGER_ARGS)
	$(MIMIC) train policies/configs/push_t_state_edm_dagger.yaml --set steps=8000 $(TRAIN_ARGS)
	$(MIMIC) dagger policies/configs/push_t_state_edm_dagger2.yaml $(DAGGER_ARGS)
	for steps in 10000 30000 50000; do \
	  $(MIMIC) train policies/configs/push_t_state_edm_dagger2.yaml --set steps=$$steps $(TRAIN_ARGS) || exit 1; done

pick-place: setup
	$(MIMIC) record policies/configs/pick_place_state_flow.yaml
	for c in flow edm consistency diffusion; do \
	  $(MIMIC) train policies/configs/pick_place_state_$$c.yaml $(TRAIN_ARGS) || exit 1; done

pick-place-image: setup
	$(MIMIC) record policies/configs/pick_place_image_flow.yaml
	$(MIMIC) train policies/configs/pick_place_image_flow.yaml $(TRAIN_ARGS)

reach track: setup
	$(MIMIC) record policies/configs/$@_state_flow.yaml
	$(MIMIC) train policies/configs/$@_state_flow.yaml $(TRAIN_ARGS)

# track policies that continue a prefix (docs/realtime_chunking.md): the flow teacher, then its 1-step student
track-rtc: setup
	$(MIMIC) record policies/configs/track_state_flow.yaml
	$(MIMIC) train policies/configs/track_state_flow.yaml --set run_dir=runs/track_state_flow_prefix \
	  --set policy.prefix_rows=8 $(TRAIN_ARGS)
	$(MIMIC) train policies/configs/track_state_consistency_prefix.yaml $(TRAIN_ARGS)

handheld-eef: setup
	$(MIMIC) record policies/configs/handheld_pick_place_eef.yaml
	$(MIMIC) train policies/configs/handheld_pick_place_eef.yaml $(TRAIN_ARGS)
	$(MIMIC) train policies/configs/handheld_pick_place_eef_finetune.yaml $(TRAIN_ARGS)

clean:
	rm -rf $(VENV) runs bench/results .pytest_cache sim/assets/robosuite
