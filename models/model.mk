# Model targets; the main Makefile does `include models/model.mk`.
#
#   make model    build models/.venv from models/requirements.txt (PyPI only)
#                 and retrain models/phishing-url from MODEL_DATA

MODEL_VENV ?= models/.venv
MODEL_DATA ?= ../shared/data/phishing_urls_train.csv
MODEL_OUT  ?= models/phishing-url

.PHONY: model model-venv

model-venv: $(MODEL_VENV)/.installed

$(MODEL_VENV)/.installed: models/requirements.txt
	python3 -m venv $(MODEL_VENV)
	$(MODEL_VENV)/bin/pip install --disable-pip-version-check -q -r models/requirements.txt
	touch $@

model: $(MODEL_VENV)/.installed
	$(MODEL_VENV)/bin/python models/train.py $(MODEL_DATA) --out $(MODEL_OUT)
