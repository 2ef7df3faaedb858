# The two commands of the README, plus a few conveniences. Every target sets up .venv first
# (scripts/setup-env is incremental: seconds when nothing changed).
.PHONY: demo test env lint clean default-models

OUT ?= demo_out

demo:   ## the main job on built-in defaults: event segmentation demo, results in $(OUT)/ (make demo OUT=dir ARGS="--bag B")
	scripts/in-env python -m madm_ros.doctor --demo --out $(OUT) $(ARGS)

test:   ## the whole default test suite
	scripts/in-env python -m pytest

env:    ## only create / refresh .venv and the generated interfaces
	scripts/setup-env

default-models:   ## regenerate models/ from the synthetic benchmark's MADM teachers (run bench/synthetic_benchmark.py first)
	scripts/make-default-models

lint:
	scripts/in-env python -m ruff check madm_ros madm_train tests bench

clean:
	rm -rf .venv build install log
