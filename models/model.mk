# Model targets; the main Makefile does `include models/model.mk`.
#
#   make model    build models/.venv from models/requirements.txt (PyPI only)
#                 and train a candidate version from MODEL_DATA into
#                 var/models/phishing-url-candidate: the shipped
#                 models/phishing-url is never overwritten by default. Serve
#                 the candidate beside it as a canary (README "Model
#                 versions"); ship it with
#                 make model MODEL_OUT=models/phishing-url MODEL_VERSION=<x.y.z>

MODEL_VENV ?= models/.venv
MODEL_DATA ?= ../shared/data/phishing_urls_train.csv
MODEL_OUT  ?= var/models/phishing-url-candidate
# Empty: train.py's shipped version into models/phishing-url, else that version + "-candidate".
MODEL_VERSION ?=

.PHONY: model model-venv

model-venv: $(MODEL_VENV)/.installed

$(MODEL_VENV)/.installed: models/requirements.txt
	python3 -m venv $(MODEL_VENV)
	$(MODEL_VENV)/bin/pip install --disable-pip-version-check -q -r models/requirements.txt
	touch $@

model: $(MODEL_VENV)/.installed
	$(MODEL_VENV)/bin/python models/train.py $(MODEL_DATA) --out $(MODEL_OUT) $(if $(MODEL_VERSION),--version $(MODEL_VERSION))
